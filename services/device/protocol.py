"""The firmware's serial protocol, Pi side: reply lines and model-update frames.

Lines from the device are readings (``temp:...,seq:..``), comments (``# ...``) or replies
(``@...``). After ``UPDATE <size> <crc32hex>`` the host sends COBS frames, each delimited
by 0x00: ``type u8 | offset u32 | len u16 | data | crc32 u32`` (little-endian; ``C`` commit
and ``A`` abort carry an offset of 0 and no length or data). The device answers every frame
with ``@ACK <next_offset>`` or ``@NAK <next_offset> <reason>``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field


class FrameType(enum.IntEnum):
    DATA = ord("D")
    COMMIT = ord("C")
    ABORT = ord("A")


class NakReason(enum.StrEnum):
    """Why the device refused a frame or an image (firmware/core/update.c)."""

    COBS = "cobs"
    SHORT = "short"
    LONG = "long"
    CRC = "crc"
    TYPE = "type"
    OFFSET = "offset"
    SIZE = "size"
    OVERFLOW = "overflow"
    INCOMPLETE = "incomplete"
    IMAGE_CRC = "imagecrc"
    TEST_VECTOR = "testvector"
    TOO_LARGE = "toolarge"
    TOO_SMALL = "toosmall"
    TIMEOUT = "timeout"
    BAD_IMAGE = "badimage"
    OTHER = "other"

    @classmethod
    def parse(cls, text: str) -> NakReason:
        if text.startswith("badimage"):
            return cls.BAD_IMAGE
        try:
            return cls(text)
        except ValueError:
            return cls.OTHER


#: Transfer errors the sender fixes by resending; the others end the update.
RETRYABLE = frozenset({
    NakReason.COBS, NakReason.SHORT, NakReason.LONG, NakReason.CRC, NakReason.OFFSET,
    NakReason.OVERFLOW, NakReason.TIMEOUT, NakReason.INCOMPLETE,
})


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        if code == 0 or i + code > len(data):
            raise ValueError("invalid COBS: a zero byte or a block past the end")
        out += data[i + 1 : i + code]
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def encode_frame(kind: FrameType, offset: int = 0, data: bytes = b"") -> bytes:
    """One frame, COBS-encoded, with its 0x00 delimiter."""
    raw = struct.pack("<BI", kind, offset)
    if kind is FrameType.DATA:
        raw += struct.pack("<H", len(data)) + data
    raw += struct.pack("<I", zlib.crc32(raw))
    return cobs_encode(raw) + b"\0"


class ReplyKind(enum.StrEnum):
    PONG = "PONG"
    INFO = "INFO"
    OK = "OK"
    ERR = "ERR"
    ACK = "ACK"
    NAK = "NAK"
    PRED = "PRED"
    OTHER = "OTHER"


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    words: tuple[str, ...]
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def offset(self) -> int:
        """ACK/NAK: the next offset the device expects."""
        return int(self.words[0])

    @property
    def reason(self) -> NakReason:
        return NakReason.parse(self.words[1] if len(self.words) > 1 else "")


def parse_reply(line: str) -> Reply | None:
    """``@INFO fw=0.1.0 model=x ...`` -> Reply; None for readings and comments."""
    if not line.startswith("@"):
        return None
    parts = line[1:].split()
    if not parts:
        return Reply(ReplyKind.OTHER, (), {}, line)
    try:
        kind = ReplyKind(parts[0])
    except ValueError:
        kind = ReplyKind.OTHER
    fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    words = tuple(p for p in parts[1:] if "=" not in p)
    return Reply(kind, words, fields, line)


@dataclass(frozen=True)
class DeviceInfo:
    fw: str
    model: str
    hash: str
    slot: str
    rate_ms: int
    mode: str
    suppressed: int
    extra: dict[str, str]

    @classmethod
    def from_reply(cls, reply: Reply) -> DeviceInfo:
        f = dict(reply.fields)
        try:
            return cls(
                fw=f.pop("fw"), model=f.pop("model"), hash=f.pop("hash"), slot=f.pop("slot"),
                rate_ms=int(f.pop("rate_ms")), mode=f.pop("mode"),
                suppressed=int(f.pop("suppressed")), extra=f,
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"malformed INFO reply {reply.text!r}: {exc}") from None


def image_hash(blob: bytes) -> str:
    """What INFO reports as ``hash`` for a model image: its CRC-32, 8 hex digits."""
    return f"{zlib.crc32(blob):08x}"
