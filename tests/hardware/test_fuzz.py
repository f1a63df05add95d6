"""Random and mutated bytes against both protocols' decoders: nothing escapes, nothing invalid is accepted.

The mutated streams start as valid packets; whatever the decoder returns afterwards must be one of those
packets exactly (a damaged packet is dropped, never half-accepted or merged with its neighbour). Examples are
derandomized so a run is reproducible.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaloco.hardware import bridge_protocol as bp
from metaloco.hardware import dynamixel_protocol as dxl

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

mutation = st.tuples(st.sampled_from(["flip", "drop", "insert", "cut", "zero"]), st.integers(0, 10_000),
                     st.integers(0, 255))


def mutate(stream: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(stream)
    for kind, where, value in mutations:
        if not data:
            break
        i = where % len(data)
        if kind == "flip":
            data[i] ^= value or 1
        elif kind == "drop":
            del data[i]
        elif kind == "insert":
            data.insert(i, value)
        elif kind == "cut":
            del data[i:i + 1 + value % 16]
        else:
            data[i] = 0
    return bytes(data)


def feed_in_chunks(decoder, stream: bytes, chunk: int) -> list:
    out = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i:i + chunk])
    return out


# ------------------------------------------------------------------ bridge
floats = st.floats(-100, 100, width=32)


@st.composite
def bridge_frames(draw) -> list[bytes]:
    frames = []
    for seq in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["state", "command", "heartbeat", "request"]))
        if kind == "state":
            a = np.array(draw(st.lists(floats, min_size=46, max_size=46)))
            body = bp.State(seq, seq, seq, bp.MODE_PD, 0, a[:12], a[12:24], a[24:36], a[36:40], a[40:43], a[43:])
            frames.append(bp.encode_state(seq, body))
        elif kind == "command":
            a = np.array(draw(st.lists(floats, min_size=36, max_size=36)))
            frames.append(bp.encode_command(seq, bp.Command(bp.MODE_PD, a[:12], a[12:24], a[24:])))
        elif kind == "heartbeat":
            frames.append(bp.encode_heartbeat_reply(seq, bp.HeartbeatReply(seq, 12, 0, 100, seq, 0)))
        else:
            frames.append(bp.encode(bp.STATE_REQUEST, seq))
    return frames


def reencode(packet: bp.Packet) -> bytes:
    body = packet.body
    if packet.type == bp.STATE:
        return bp.encode_state(packet.seq, body)
    if packet.type == bp.COMMAND:
        return bp.encode_command(packet.seq, body)
    if packet.type == bp.HEARTBEAT_REPLY:
        return bp.encode_heartbeat_reply(packet.seq, body)
    return bp.encode(packet.type, packet.seq)


@FUZZ
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_bridge_decoder_takes_random_bytes(data, chunk):
    decoder = bp.FrameDecoder()
    assert feed_in_chunks(decoder, data, chunk) == []


@FUZZ
@given(bridge_frames(), st.lists(mutation, min_size=1, max_size=4), st.integers(1, 64))
def test_bridge_decoder_accepts_only_intact_frames(frames, mutations, chunk):
    stream = mutate(b"".join(frames), mutations)
    decoder = bp.FrameDecoder()
    for packet in feed_in_chunks(decoder, stream, chunk):
        assert reencode(packet) in frames, "a decoded packet must be one that was sent, unchanged"


@FUZZ
@given(bridge_frames(), st.integers(1, 64))
def test_bridge_decoder_loses_nothing_intact(frames, chunk):
    decoder = bp.FrameDecoder()
    assert [reencode(p) for p in feed_in_chunks(decoder, b"".join(frames), chunk)] == frames


# --------------------------------------------------------------- dynamixel
@st.composite
def dynamixel_packets(draw) -> list[bytes]:
    packets = []
    for _ in range(draw(st.integers(1, 4))):
        sid = draw(st.integers(0, 252))
        instruction = draw(st.sampled_from([dxl.PING, dxl.READ, dxl.WRITE, dxl.SYNC_READ, dxl.SYNC_WRITE, dxl.STATUS]))
        params = draw(st.binary(max_size=60))
        packets.append(dxl.encode(sid, instruction, params))
    return packets


@FUZZ
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_dynamixel_parser_takes_random_bytes(data, chunk):
    parser = dxl.PacketParser()
    for packet in feed_in_chunks(parser, data, chunk):
        # any packet found in noise passed the CRC, so it is exactly what a sender could have encoded
        assert dxl.encode(packet.id, packet.instruction, packet.params) in data


@FUZZ
@given(dynamixel_packets(), st.lists(mutation, min_size=1, max_size=4), st.integers(1, 64))
def test_dynamixel_parser_accepts_only_intact_packets(packets, mutations, chunk):
    stream = mutate(b"".join(packets), mutations)
    for packet in feed_in_chunks(dxl.PacketParser(), stream, chunk):
        assert dxl.encode(packet.id, packet.instruction, packet.params) in packets


@FUZZ
@given(dynamixel_packets(), st.integers(1, 64))
def test_dynamixel_parser_loses_nothing_intact(packets, chunk):
    got = feed_in_chunks(dxl.PacketParser(), b"".join(packets), chunk)
    assert [dxl.encode(p.id, p.instruction, p.params) for p in got] == packets
