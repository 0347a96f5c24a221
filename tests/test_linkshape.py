"""Link emulation (pipeline/linkshape.py): a network namespace whose loopback tc tbf shapes to a
bandwidth trace; measured with real TCP and ZeroMQ traffic inside it."""
from __future__ import annotations

import json
import sys

import pytest

from pipeline import linkshape

REASON = linkshape.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# Inside the namespace: a ZeroMQ PUSH/PULL pair on 127.0.0.1 sends as fast as it can while the
# trace runs; the receiver counts bytes per second of the trace.
CHILD = r"""
import json, sys, threading, time
import zmq
from pipeline import linkshape
follower = linkshape.TraceFollower(linkshape.parse_trace(sys.argv[1]))
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL); port = pull.bind_to_random_port("tcp://127.0.0.1")
push = ctx.socket(zmq.PUSH); push.setsockopt(zmq.SNDHWM, 4); push.setsockopt(zmq.SNDBUF, 16384)
push.connect(f"tcp://127.0.0.1:{port}")
stop = threading.Event()
def send():
    payload = b"x" * 8192
    while not stop.is_set():
        try:
            push.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(0.001)
follower.start()       # shaped before the first byte: nothing crosses at loopback speed
threading.Thread(target=send, daemon=True).start()
received = [0] * len(follower.segments)
while time.monotonic() - follower.started_at < follower.duration:
    if pull.poll(50):
        elapsed = time.monotonic() - follower.started_at
        received[follower.segment_at(elapsed)] += len(pull.recv())
stop.set(); follower.stop()
print(json.dumps([r / s.seconds for r, s in zip(received, follower.segments)]))
import os; os._exit(0)
"""


def test_zeromq_throughput_follows_the_trace(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = linkshape.run_inside([sys.executable, str(script), "100:3,40:3,100:3"], timeout=60,
                                capture_output=True, text=True,
                                env={"PYTHONPATH": str(linkshape.__file__).rsplit("/pipeline/", 1)[0]})
    assert done.returncode == 0, done.stderr[-1500:]
    fast, slow, fast_again = json.loads(done.stdout.strip().splitlines()[-1])
    # each stretch delivers its shaped rate (the first ~0.2 s of a slower stretch drains the
    # queue built at the faster rate, so the slow stretch is allowed to read a little high)
    # (the first stretch starts with a full bucket: a few kB above the rate)
    assert 80_000 < fast < 120_000 and 80_000 < fast_again < 120_000, (fast, slow, fast_again)
    assert 30_000 < slow < 55_000, (fast, slow, fast_again)


def test_refuses_to_shape_the_machines_own_loopback(monkeypatch):
    monkeypatch.delenv(linkshape.NAMESPACE_FLAG, raising=False)
    with pytest.raises(linkshape.ShapingError, match="refusing"):
        linkshape.set_rate(100_000)


@pytest.mark.parametrize("trace", ["", "100", "100:0", "-5:3", "a:b"])
def test_bad_traces_are_one_error(trace):
    with pytest.raises(ValueError, match="trace"):
        linkshape.parse_trace(trace)
