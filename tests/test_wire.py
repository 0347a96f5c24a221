"""Wire format v1: exact round trips, and nothing but WireError for malformed input."""
from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline import wire
from pipeline.packet import Packet, audio_packet, image_packet


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_arrays_of_every_dtype_round_trip(dtype):
    array = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    packet, eos = wire.decode(wire.encode(Packet("s", -5, 7, array, {"k": [1, "x"]})))
    assert not eos and packet.stream == "s" and packet.timestamp_ns == -5 and packet.seq == 7
    assert packet.payload.dtype == np.dtype(dtype) and packet.payload.shape == (2, 3, 4)
    np.testing.assert_array_equal(packet.payload, array)
    assert packet.meta == {"k": [1, "x"]}


def test_big_endian_scalars_bytes_dicts_and_eos():
    big = np.arange(5, dtype=">i4")
    assert wire.decode(wire.encode(Packet("b", 0, 0, big)))[0].payload.tolist() == list(range(5))
    scalar = wire.decode(wire.encode(Packet("z", 0, 0, np.array(2.5))))[0]
    assert scalar.payload.shape == () and scalar.payload == 2.5
    blob = wire.decode(wire.encode(Packet("bytes", 1, 2, b"\x00\xff" * 10, {"codec": "x"})))[0]
    assert blob.payload == b"\x00\xff" * 10 and blob.meta == {"codec": "x"}
    doc = wire.decode(wire.encode(Packet("m", 1, 2, {"a": 1.5, "b": "t"}, {"u": 1})))[0]
    assert doc.payload == {"a": 1.5, "b": "t"} and doc.meta == {"u": 1}
    assert wire.decode(wire.encode(Packet("e", 0, 0, b""), eos=True))[1] is True


def test_typed_packets_carry_their_facts():
    image = image_packet("cam", 10, 0, np.zeros((4, 6, 3), np.uint8))
    assert image.meta == {"height": 4, "width": 6, "channels": 3, "pixel_format": "rgb24"}
    audio = audio_packet("mic", 99, 3, np.zeros((8, 7), np.int32), 48000)
    assert audio.meta == {"sample_rate": 48000, "channels": 7, "first_sample_ns": 99}
    assert wire.decode(wire.encode(audio))[0].meta == audio.meta


def test_unsendable_payloads_are_refused():
    with pytest.raises(wire.WireError, match="dtype object"):
        wire.encode(Packet("s", 0, 0, np.array([object()])))
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.encode(Packet("s", 0, 0, [1, 2, 3]))


def test_small_bodies_share_the_header_frame():
    small = wire.encode(Packet("s", 1, 2, np.arange(10, dtype=np.int16)))
    assert len(wire.pack(small, b"route")) == 1
    one = wire.pack(small, b"")[0]
    assert wire.decode([one])[0].payload.tolist() == list(range(10))
    big = wire.encode(Packet("s", 1, 2, np.zeros(wire.INLINE_MAX + 1, np.uint8)))
    assert len(wire.pack(big)) == 2


def test_crafted_headers_that_once_crashed_the_receiver():
    header = bytes(wire.encode(Packet("s", 0, 0, np.zeros((2, 2), np.uint8)))[0])
    wrap = bytearray(header)  # dims 2^33 x 2^31: their uint64 product wraps to 0
    wrap[wire._FIXED.size:wire._FIXED.size + 16] = (2**33).to_bytes(8, "little") + \
        (2**31).to_bytes(8, "little")
    with pytest.raises(wire.WireError):
        wire.decode([bytes(wrap), b""])
    with pytest.raises(wire.WireError):  # nesting deep enough to exhaust the JSON parser
        wire.decode([_with_meta(b"[" * 100_000), b""])
    assert wire.decode([_with_meta(b'{"ok":1}'), b""])[0].meta == {"ok": 1}


def _with_meta(meta: bytes) -> bytes:
    """A bytes-payload header whose metadata field is `meta`, lengths consistent."""
    fixed = bytearray(wire._FIXED.pack(wire.MAGIC, wire.VERSION, 0, wire.KIND_BYTES, 0, 0, 0, 0,
                                       1, len(meta)))
    return bytes(fixed) + b"s" + meta


def test_random_damage_gives_only_wire_errors():
    rng = random.Random(1)
    header, body = (bytes(f) for f in wire.encode(
        audio_packet("mic", 5, 1, np.ones((16, 7), np.int32), 48000)))
    for _ in range(5000):
        h, b = bytearray(header), bytearray(body)
        target = h if rng.random() < 0.8 else b
        for _ in range(rng.randint(1, 4)):
            if target and rng.random() < 0.7:
                target[rng.randrange(len(target))] = rng.randrange(256)
            else:
                del target[rng.randrange(len(target) + 1):]
        try:
            packet, _ = wire.decode([bytes(h), bytes(b)])
        except wire.WireError:
            continue
        assert isinstance(packet.meta, dict)  # damage that still parses is self-consistent


def test_limits():
    frames = wire.encode(Packet("s", 0, 0, np.zeros(1000, np.uint8)))
    with pytest.raises(wire.WireError, match="exceeds the limit"):
        wire.decode(frames, max_bytes=999)
    with pytest.raises(wire.WireError, match="needs 1000 bytes, got 0"):
        wire.decode(frames[:1])  # a header without its body
    with pytest.raises(wire.WireError, match="expected 1 or 2 frames"):
        wire.decode([*frames, b""])
    with pytest.raises(wire.WireError, match="trailing"):
        wire.from_bytes(wire.to_bytes(frames) + b"x")
    assert [bytes(f) for f in wire.from_bytes(wire.to_bytes(frames))] == [bytes(f) for f in frames]


def test_metadata_cache_keeps_types_apart():
    for meta in ({"a": 1, "b": True, "c": 1.0}, {"a": True, "b": 1, "c": 1}, {"a": [1, 2]}):
        for _ in range(2):  # second round comes from the caches
            got = wire.decode(wire.encode(Packet("s", 0, 0, b"", meta)))[0].meta
            assert got == meta and [type(v) for v in got.values()] == \
                [type(v) for v in meta.values()]
    first = wire.decode(wire.encode(Packet("s", 0, 0, b"", {"k": 1})))[0]
    first.meta["k"] = 99  # a receiver changing its meta must not change the next packet's
    assert wire.decode(wire.encode(Packet("s", 0, 0, b"", {"k": 1})))[0].meta == {"k": 1}


@pytest.mark.parametrize("meta", [b"1", b"null", b"[1]", b'"text"', b"true"])
def test_metadata_that_is_not_an_object_is_a_wire_error(meta):
    with pytest.raises(wire.WireError, match="not an object"):
        wire.decode([_with_meta(meta), b""])


def test_axes_numpy_cannot_hold_and_oversized_metadata_are_wire_errors():
    header = bytearray(wire.encode(Packet("s", 0, 0, np.zeros((2, 2), np.uint8)))[0])
    header[wire._FIXED.size:wire._FIXED.size + 16] = (0).to_bytes(8, "little") + \
        (2**63).to_bytes(8, "little")                       # 0 elements, but an absurd axis
    with pytest.raises(wire.WireError, match="axis over"):
        wire.decode([bytes(header), b""])
    big = b'{"x":"' + b"a" * (wire.MAX_META_BYTES + 10) + b'"}'
    with pytest.raises(wire.WireError, match="metadata of .* exceeds"):
        wire.decode([_with_meta(big), b""])


def test_link_inbox_counts_hostile_messages_and_keeps_delivering():
    import time

    import zmq

    from pipeline.links import LinkReceiver
    from pipeline.transport import route_prefix
    got = []
    ctx = zmq.Context()
    inbox = LinkReceiver(ctx, "tcp://127.0.0.1:*", lambda r, p, eos: got.append(p) or True,
                         knows=lambda route: route == "a->b")
    inbox.start()
    push = ctx.socket(zmq.PUSH)
    push.connect(inbox.endpoint)
    good = route_prefix("a->b") + _with_meta(b'{"ok": 1}')
    hostile = [route_prefix("a->b") + _with_meta(m) for m in (b"1", b"null", b"[1]")]
    header = bytearray(wire.encode(Packet("s", 0, 0, np.zeros((2, 2), np.uint8)))[0])
    header[wire._FIXED.size:wire._FIXED.size + 16] = (0).to_bytes(8, "little") + \
        (2**63).to_bytes(8, "little")
    hostile.append(route_prefix("a->b") + bytes(header))
    unknown = route_prefix("x->y") + _with_meta(b"[" * 100)      # bad, but the route goes first
    for message in hostile + [unknown, good]:
        push.send(message)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert [p.meta for p in got] == [{"ok": 1}]
        assert inbox.rejected == 5 and inbox.is_alive()
        assert "unknown route 'x->y'" in inbox.last_reject
    finally:
        push.close(0)
        inbox.done.set()            # as the runtime stops it: the thread closes its sockets
        inbox.join(5)
        ctx.term()


def test_numpy_scalars_cross_processes_and_other_objects_are_one_line_errors():
    packet = Packet("m", 0, 0, {"ssdr": np.float32(1.5), "n": np.int64(3), "ok": np.bool_(True),
                                "v": np.arange(3)}, {"gain": np.float64(2.0)})
    received, _ = wire.decode(wire.encode(packet))
    assert received.payload == {"ssdr": 1.5, "n": 3, "ok": True, "v": [0, 1, 2]}
    assert received.meta == {"gain": 2.0} and type(received.payload["n"]) is int
    with pytest.raises(wire.WireError, match="stream 'm'.*type object is not JSON"):
        wire.encode(Packet("m", 0, 0, {"x": object()}))


def test_batches_round_trip_and_random_damage_gives_only_wire_errors():
    packets = [audio_packet("mic", 5 + i, i, np.full((16, 7), i, np.int32), 48000)
               for i in range(5)] + [Packet("s", 9, 9, b"xyz", {"k": 1})]
    batch = wire.pack_batch([b"".join(wire.pack(wire.encode(p))) for p in packets])
    decoded = wire.Decoder().decode_batch(memoryview(batch))
    assert [(p.stream, p.seq, p.timestamp_ns, p.meta) for p, _ in decoded] == \
        [(p.stream, p.seq, p.timestamp_ns, p.meta) for p in packets]
    assert all(np.array_equal(d.payload, p.payload) if isinstance(p.payload, np.ndarray)
               else d.payload == p.payload for (d, _), p in zip(decoded, packets))
    rng = random.Random(2)
    for _ in range(3000):
        damaged = bytearray(batch)
        for _ in range(rng.randint(1, 3)):
            if damaged and rng.random() < 0.7:
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            else:
                del damaged[rng.randrange(len(damaged) + 1):]
        try:
            result = wire.Decoder().decode_batch(memoryview(bytes(damaged)))
        except wire.WireError:
            continue
        assert len(result) >= 2 and all(isinstance(p.meta, dict) for p, _ in result)


def test_decoder_reuses_a_repeated_header_only_when_it_is_the_same():
    decoder = wire.Decoder()
    cases = [Packet("a", 1, 1, np.zeros((2, 3), np.uint8), {"x": 1}),
             Packet("a", 2, 2, np.ones((2, 3), np.uint8), {"x": 1}),   # repeats: reused
             Packet("b", 3, 3, np.ones((2, 3), np.uint8), {"x": 1}),   # other stream
             Packet("b", 4, 4, np.ones((3, 2), np.uint8), {"x": 1}),   # other shape, same size
             Packet("b", 5, 5, np.ones((3, 2), np.uint8), {"x": 2}),   # other metadata
             Packet("b", 6, 6, np.ones((3, 2), np.int8), {"x": 2}),    # other dtype
             Packet("b", 7, 7, b"\x01" * 6, {"x": 2})]                 # bytes, same body size
    for packet in cases:
        got, eos = decoder.decode(wire.pack(wire.encode(packet)))
        assert (got.stream, got.seq, got.timestamp_ns, got.meta) == \
            (packet.stream, packet.seq, packet.timestamp_ns, packet.meta) and not eos
        assert type(got.payload) is type(packet.payload)
        if isinstance(packet.payload, np.ndarray):
            assert got.payload.dtype == packet.payload.dtype
            np.testing.assert_array_equal(got.payload, packet.payload)
        got.meta["x"] = 99  # a receiver changing its meta must not change the next packet's
    eos_frames = wire.pack(wire.end_of_stream())
    assert decoder.decode(eos_frames)[1] and decoder.decode(eos_frames)[1]
