"""Serial line parsers: every format, every routed kind, every error reason."""

from __future__ import annotations

import pytest

from services.collector.parsers import (
    ANOMALY_FLAG,
    LineKind,
    LineParser,
    ParseError,
    parse_reply,
)
from services.contract.limits import MAX_VALUES
from services.contract.models import Sample


def test_workshop_line() -> None:
    got = LineParser().parse(b"temp:28.6875,humidity:45.2000,pressure:993.3853\r\n")
    assert got.kind is LineKind.READING
    assert got.values == {"temp": 28.6875, "humidity": 45.2, "pressure": 993.3853}
    assert got.flags == () and got.device_seq is None


def test_metadata_keys_are_not_values() -> None:
    got = LineParser().parse("seq:41,ms:123456,temp:21.5,humidity:40,anomaly:1")
    assert got.values == {"temp": 21.5, "humidity": 40.0}
    assert (got.device_seq, got.device_ms, got.flags) == (41, 123456, (ANOMALY_FLAG,))
    assert LineParser().parse("temp:1,anomaly:0").flags == ()


def test_comments_and_replies_are_routed() -> None:
    p = LineParser()
    c = p.parse("# edgeloop fw 1.2 booting")
    assert (c.kind, c.text) == (LineKind.COMMENT, "edgeloop fw 1.2 booting")
    r = p.parse("@INFO fw=1.2 model=climate hash=deadbeef slot=a rate_ms=1000 mode=all")
    assert r.kind is LineKind.REPLY
    info = parse_reply(r.text)
    assert info == {
        "reply": "INFO", "fw": "1.2", "model": "climate", "hash": "deadbeef", "slot": "a",
        "rate_ms": "1000", "mode": "all",
    }
    assert parse_reply("OK RATE") == {"reply": "OK", "detail": "RATE"}
    assert p.parse("   ").kind is LineKind.EMPTY


def test_csv_header_then_rows() -> None:
    p = LineParser()
    assert p.parse("0.1,0.2,0.3").error is ParseError.NO_HEADER
    assert p.parse("aX,aY,aZ,gX,gY,gZ").kind is LineKind.HEADER
    got = p.parse("0.01,-0.02,0.98,1.5,-2.25,0")
    assert got.values == {"aX": 0.01, "aY": -0.02, "aZ": 0.98, "gX": 1.5, "gY": -2.25, "gZ": 0.0}
    assert p.parse("0.01,-0.02,0.98").error is ParseError.PARTIAL
    assert p.parse("1,2,3,4,5,6,7").error is ParseError.MALFORMED
    # A row of names with a number among them is not a header.
    assert p.parse("x,2,3,4,5,6").error is ParseError.PARTIAL
    assert p.header == ("aX", "aY", "aZ", "gX", "gY", "gZ")
    # A device that resets prints a new header; the new one wins.
    p.parse("seq,temp")
    assert p.parse("7,21.5").values == {"temp": 21.5}


def test_recording_header_is_locked() -> None:
    p = LineParser(header=("a", "b"))
    assert p.parse("c,d").error is ParseError.PARTIAL
    assert p.parse("1,2").values == {"a": 1.0, "b": 2.0}


def test_json_lines() -> None:
    p = LineParser()
    got = p.parse('{"temp": 21.5, "seq": 3, "anomaly": 1}')
    assert (got.values, got.device_seq, got.flags) == ({"temp": 21.5}, 3, ("anomaly",))
    assert p.parse('{"temp": "hot"}').error is ParseError.BAD_JSON
    assert p.parse('{"temp": true}').error is ParseError.BAD_JSON
    assert p.parse("[1, 2]").error is ParseError.BAD_JSON
    assert p.parse('{"temp": 21.5').error is ParseError.BAD_JSON
    assert p.parse('{"temp": NaN}').error is ParseError.NON_FINITE
    assert p.parse('{"temp": 1e999}').error is ParseError.NON_FINITE


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe\x00garbage", ParseError.DECODE),
        (b"x" * 5000, ParseError.OVERSIZED),
        (b"hello world", ParseError.MALFORMED),
        (b"temp:28.68,humi", ParseError.PARTIAL),  # cut at the end
        (b"temp:28.68,humidity:", ParseError.PARTIAL),
        (b".6875,humidity:45.2", ParseError.MALFORMED),  # cut at the start: no name
        (b"temp:nan,humidity:45", ParseError.NON_FINITE),
        (b"temp:inf", ParseError.NON_FINITE),
        (b"t$mp:1", ParseError.BAD_NAME),
        (b"x" * 65 + b":1", ParseError.BAD_NAME),
        (b"Boot fault: hard fault at 0x0800", ParseError.MALFORMED),
        (b"seq:4,ms:100", ParseError.NO_VALUES),
        (b"seq:x,temp:1", ParseError.MALFORMED),
        (b"temp:1:2", ParseError.MALFORMED),
    ],
)
def test_error_reasons(line: bytes, reason: ParseError) -> None:
    got = LineParser().parse(line)
    assert got.kind is LineKind.ERROR
    assert got.error is reason


def test_too_many_values() -> None:
    line = ",".join(f"v{i}:{i}" for i in range(MAX_VALUES + 1))
    assert LineParser().parse(line).error is ParseError.TOO_MANY_VALUES
    ok = ",".join(f"v{i}:{i}" for i in range(MAX_VALUES))
    assert LineParser().parse(ok).kind is LineKind.READING


def test_parsed_readings_satisfy_the_contract() -> None:
    p = LineParser()
    for line in ["temp:1e3,h.x-y_z:-0.5", '{"a": 1, "b": 2.5}', "A1,B2", "3,4"]:
        got = p.parse(line)
        if got.kind is LineKind.READING:
            assert got.values is not None
            Sample(ts=1, seq=1, values=got.values, flags=got.flags)  # raises if not valid
