"""Small user-defined nodes, loaded by graphs in the tests as `tests.nodes_for_tests:Class`."""
from __future__ import annotations

import json
import time

import numpy as np

from pipeline.node import Input, Node, Output, Param, Source
from pipeline.packet import Packet


class Ramp(Source):
    """Counts 0..count-1; each packet carries an int32 array filled with its number."""

    out = Output("audio")
    count = Param(int, 10, "packets to send (0 = endless)")
    size = Param(int, 16, "elements per packet")
    speed = Param(float, 0.0, "real-time factor; packets are 10 ms apart")

    def run(self):
        seq = 0
        while not self.count or seq < self.count:
            ts = 1_000_000_000 + seq * 10_000_000
            self.pace(ts)
            yield Packet("ramp", ts, seq, np.full((self.size, 1), seq, np.int32),
                         {"sample_rate": 100, "channels": 1, "first_sample_ns": ts})
            seq += 1


class Scale(Node):
    """Multiplies the payload; fails on purpose at packet `fail_at` (-1 = never)."""

    inp = Input("audio")
    out = Output("audio")
    factor = Param(int, 2)
    fail_at = Param(int, -1)
    delay_s = Param(float, 0.0, "sleep per packet, to make a slow consumer")

    def on_inp(self, packet):
        if packet.seq == self.fail_at:
            raise ValueError(f"refusing packet {packet.seq}")
        time.sleep(self.delay_s)
        return packet.replace(payload=packet.payload * self.factor)


class Collect(Node):
    """Writes seq, timestamp and first value of each packet as JSON lines to `path`."""

    inp = Input("any")
    path = Param(str)

    def setup(self):
        self.file = open(self.path, "w")

    def on_inp(self, packet):
        first = packet.payload.flat[0].item() if isinstance(packet.payload, np.ndarray) else None
        self.file.write(json.dumps({"stream": packet.stream, "seq": packet.seq,
                                    "t": packet.timestamp_ns, "v": first,
                                    "shape": list(np.shape(packet.payload))}) + "\n")
        self.file.flush()

    def teardown(self):
        self.file.close()
