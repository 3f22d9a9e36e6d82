"""The Pi side of the firmware's serial protocol: COBS, frames, replies (services/device)."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from services.device.protocol import (
    DeviceInfo,
    FrameType,
    NakReason,
    ReplyKind,
    cobs_decode,
    cobs_encode,
    encode_frame,
    image_hash,
    parse_reply,
)


def test_cobs_known_vectors() -> None:
    # From the COBS paper / Wikipedia's examples.
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"
    run = bytes(range(1, 255))
    assert cobs_encode(run) == b"\xff" + run + b"\x01"


def test_cobs_round_trips_and_never_contains_zero() -> None:
    rng = random.Random(7)
    for n in [*range(0, 300), 508, 509, 1000]:
        data = bytes(rng.choice([0, rng.randrange(1, 256)]) for _ in range(n))
        enc = cobs_encode(data)
        assert b"\x00" not in enc
        assert cobs_decode(enc) == data


@pytest.mark.parametrize("bad", [b"\x05\x11\x22", b"\x03\x11\x00\x22", b"\x00"])
def test_cobs_rejects_invalid_input(bad: bytes) -> None:
    with pytest.raises(ValueError):
        cobs_decode(bad)


def test_data_frame_layout() -> None:
    frame = encode_frame(FrameType.DATA, 0x01020304, b"\x00abc")
    assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]
    raw = cobs_decode(frame[:-1])
    kind, offset, n = struct.unpack_from("<BIH", raw)
    assert (kind, offset, n) == (ord("D"), 0x01020304, 4)
    assert raw[7:11] == b"\x00abc"
    assert struct.unpack("<I", raw[-4:])[0] == zlib.crc32(raw[:-4])
    commit = cobs_decode(encode_frame(FrameType.COMMIT)[:-1])
    assert len(commit) == 9 and commit[0] == ord("C")


def test_replies_and_info() -> None:
    assert parse_reply("temp:1.0,seq:1") is None
    assert parse_reply("# banner") is None
    ack = parse_reply("@ACK 384")
    assert ack is not None and ack.kind is ReplyKind.ACK and ack.offset == 384
    nak = parse_reply("@NAK 256 crc")
    assert nak is not None and nak.offset == 256 and nak.reason is NakReason.CRC
    bad = parse_reply("@NAK 0 badimage-magic")
    assert bad is not None and bad.reason is NakReason.BAD_IMAGE
    odd = parse_reply("@NAK 0 something-new")
    assert odd is not None and odd.reason is NakReason.OTHER
    what = parse_reply("@WHAT")
    assert what is not None and what.kind is ReplyKind.OTHER
    line = ("@INFO fw=0.1.0 model=temp-forecast hash=7ed7c82e slot=a rate_ms=1000 mode=all "
            "suppressed=3 version=1 gen=1 anomalies=0 sensors=sim")
    reply = parse_reply(line)
    assert reply is not None
    info = DeviceInfo.from_reply(reply)
    assert (info.model, info.hash, info.slot, info.rate_ms, info.suppressed) == (
        "temp-forecast", "7ed7c82e", "a", 1000, 3)
    assert info.extra == {"version": "1", "gen": "1", "anomalies": "0", "sensors": "sim"}
    short = parse_reply("@INFO fw=1")
    assert short is not None
    with pytest.raises(ValueError, match="malformed INFO"):
        DeviceInfo.from_reply(short)
    assert image_hash(b"123456789") == "cbf43926"
