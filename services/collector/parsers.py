"""Serial line parsers: the Arm workshop ``key:value`` format, CSV with a header, JSON lines.

One :class:`LineParser` per device. It decides the format line by line (devices print
banners, a CSV header after a reset, then data), so a board that switches format is not
an error. Every line ends up as exactly one :class:`ParsedLine`:

* ``READING`` with named finite values and the device's own metadata (``seq``, ``ms``,
  ``anomaly:1``) kept apart from the values;
* ``COMMENT`` (``# ...``), ``REPLY`` (``@...``, an answer to a command), ``HEADER`` (a
  CSV header), ``EMPTY``: routed, not errors;
* ``ERROR`` with a :class:`ParseError` reason, counted in a metric per reason.

A parsed reading already satisfies the contract (names, count, finite values), so the
publisher can serialize it without validating it a second time.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from services.contract.limits import MAX_NAME_LEN, MAX_VALUES
from services.contract.topics import ID_PATTERN

_NAME_RE: Final = re.compile(ID_PATTERN)
#: Keys that describe the reading rather than measure something.
META_SEQ: Final = "seq"
META_MS: Final = "ms"
META_ANOMALY: Final = "anomaly"
META_KEYS: Final = frozenset({META_SEQ, META_MS, META_ANOMALY})
ANOMALY_FLAG: Final = "anomaly"
#: Distinct value names remembered as valid; beyond this each name is checked again.
_NAME_CACHE_MAX: Final = 1024


class LineKind(enum.Enum):
    READING = "reading"
    COMMENT = "comment"
    REPLY = "reply"
    HEADER = "header"
    EMPTY = "empty"
    ERROR = "error"


class ParseError(enum.StrEnum):
    """Why a line was not a reading. A metric label: keep the set small and stable."""

    OVERSIZED = "oversized"  # longer than max_line_bytes
    DECODE = "decode"  # not UTF-8
    MALFORMED = "malformed"  # nothing recognisable
    PARTIAL = "partial"  # some fields parsed, the line was cut (e.g. on reconnect)
    NON_FINITE = "non_finite"  # NaN or inf
    BAD_NAME = "bad_name"  # a value name the contract does not allow
    TOO_MANY_VALUES = "too_many_values"
    BAD_JSON = "bad_json"  # JSON that is not an object of numbers
    NO_HEADER = "no_header"  # CSV numbers before any header line
    NO_VALUES = "no_values"  # only metadata keys


@dataclass(frozen=True, slots=True)
class ParsedLine:
    kind: LineKind
    values: dict[str, float] | None = None
    #: The device's own counter and uptime, when it sends them (``seq:``/``ms:``).
    device_seq: int | None = None
    device_ms: int | None = None
    flags: tuple[str, ...] = ()
    #: Comment, reply or header text; for errors a short excerpt of the line.
    text: str = ""
    error: ParseError | None = None


_EMPTY: Final = ParsedLine(LineKind.EMPTY)


def _error(reason: ParseError, line: str | bytes) -> ParsedLine:
    excerpt = line[:80] if isinstance(line, str) else line[:80].decode("utf-8", "replace")
    return ParsedLine(LineKind.ERROR, error=reason, text=excerpt)


class _BadLine(Exception):
    def __init__(self, reason: ParseError) -> None:
        self.reason = reason


def _reject_constant(_token: str) -> float:
    raise _BadLine(ParseError.NON_FINITE)


class LineParser:
    """Parses one device's lines; remembers the last CSV header it saw."""

    def __init__(
        self,
        *,
        max_line_bytes: int = 4096,
        max_values: int = MAX_VALUES,
        header: tuple[str, ...] | None = None,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_values = max_values
        self.header = header
        #: A recording's header is fixed; a live device may print a new one after a reset.
        self.header_locked = header is not None
        self._names: set[str] = set()
        #: Raw field name as the device prints it -> checked, stripped name.
        self._clean: dict[str, str] = {}

    # ------------------------------------------------------------------ entry point
    def parse(self, raw: bytes | str) -> ParsedLine:
        if len(raw) > self.max_line_bytes:
            return _error(ParseError.OVERSIZED, raw)
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return _error(ParseError.DECODE, raw)
        else:
            line = raw
        line = line.strip()
        if not line:
            return _EMPTY
        first = line[0]
        if first == "#":
            return ParsedLine(LineKind.COMMENT, text=line[1:].strip())
        if first == "@":
            return ParsedLine(LineKind.REPLY, text=line[1:].strip())
        try:
            if first in "{[":
                return self._json(line)
            if ":" in line:
                return self._key_values(line)
            return self._csv(line)
        except _BadLine as bad:
            return _error(bad.reason, line)

    # ------------------------------------------------------------------ formats
    def _key_values(self, line: str) -> ParsedLine:
        # The hot path (hundreds of lines a second per device, and replays): one
        # try block, names checked once and then found in a dict.
        values: dict[str, float] = {}
        seq = ms = None
        flags: tuple[str, ...] = ()
        names = self._clean
        fields_ok = 0
        try:
            for part in line.split(","):
                raw_name, sep, text = part.partition(":")
                if not sep:
                    raise ValueError("field without a colon")
                name = names.get(raw_name)
                if name is None:
                    name = self._learn(raw_name, fields_ok)
                if name in META_KEYS:
                    number = int(text)
                    if name == META_SEQ:
                        seq = number
                    elif name == META_MS:
                        ms = number
                    elif number:
                        flags = (ANOMALY_FLAG,)
                else:
                    value = float(text)
                    if value - value != 0.0:  # inf - inf and nan - nan are nan
                        raise _BadLine(ParseError.NON_FINITE)
                    values[name] = value
                fields_ok += 1
        except ValueError:
            # A torn line still carries some good fields: it was cut, not garbage.
            raise _BadLine(ParseError.PARTIAL if fields_ok else ParseError.MALFORMED) from None
        return self._reading(values, seq, ms, flags)

    def _learn(self, raw_name: str, fields_ok: int) -> str:
        """Check a name not seen before; remember it (bounded) for the fast path."""
        name = raw_name.strip()
        if not name:
            raise ValueError("field without a name")
        if name not in META_KEYS:
            self._check_name(name, fields_ok)
        if len(self._clean) < _NAME_CACHE_MAX:
            self._clean[raw_name] = name
        return name

    def _csv(self, line: str) -> ParsedLine:
        cells = [c.strip() for c in line.split(",")]
        numbers: list[float] = []
        for cell in cells:
            try:
                numbers.append(float(cell))
            except ValueError:
                break
        if len(numbers) != len(cells):
            if self._is_header(cells):
                self.header = tuple(cells)
                return ParsedLine(LineKind.HEADER, text=line)
            if self.header is not None and len(cells) == len(self.header):
                # A row of the right width with a cell that is not a number: a torn digit.
                raise _BadLine(ParseError.PARTIAL)
            raise _BadLine(ParseError.PARTIAL if numbers else ParseError.MALFORMED)
        header = self.header
        if header is None:
            raise _BadLine(ParseError.NO_HEADER)
        if len(numbers) != len(header):
            raise _BadLine(
                ParseError.PARTIAL if len(numbers) < len(header) else ParseError.MALFORMED
            )
        values: dict[str, float] = {}
        seq = ms = None
        flags: tuple[str, ...] = ()
        for name, number in zip(header, numbers, strict=True):
            if not math.isfinite(number):
                raise _BadLine(ParseError.NON_FINITE)
            if name in META_KEYS:
                if number != int(number):
                    raise _BadLine(ParseError.MALFORMED)
                if name == META_SEQ:
                    seq = int(number)
                elif name == META_MS:
                    ms = int(number)
                elif number:
                    flags = (ANOMALY_FLAG,)
            else:
                values[name] = number
        return self._reading(values, seq, ms, flags)

    def _json(self, line: str) -> ParsedLine:
        try:
            data: Any = json.loads(line, parse_constant=_reject_constant)
        except ValueError:
            raise _BadLine(ParseError.BAD_JSON) from None
        if not isinstance(data, dict):
            raise _BadLine(ParseError.BAD_JSON)
        values: dict[str, float] = {}
        seq = ms = None
        flags: tuple[str, ...] = ()
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _BadLine(ParseError.BAD_JSON)
            if name in META_KEYS:
                if isinstance(value, float) and value != int(value):
                    raise _BadLine(ParseError.BAD_JSON)
                if name == META_SEQ:
                    seq = int(value)
                elif name == META_MS:
                    ms = int(value)
                elif value:
                    flags = (ANOMALY_FLAG,)
                continue
            self._check_name(name, 0)
            number = float(value)
            if not math.isfinite(number):  # huge integers overflow to inf
                raise _BadLine(ParseError.NON_FINITE)
            values[name] = number
        return self._reading(values, seq, ms, flags)

    # ------------------------------------------------------------------ helpers
    def _reading(
        self, values: dict[str, float], seq: int | None, ms: int | None, flags: tuple[str, ...]
    ) -> ParsedLine:
        if not values:
            raise _BadLine(ParseError.NO_VALUES)
        if len(values) > self.max_values:
            raise _BadLine(ParseError.TOO_MANY_VALUES)
        if (seq is not None and seq < 0) or (ms is not None and ms < 0):
            raise _BadLine(ParseError.MALFORMED)
        return ParsedLine(
            LineKind.READING, values=values, device_seq=seq, device_ms=ms, flags=flags
        )

    def _is_header(self, cells: list[str]) -> bool:
        if self.header_locked or len(cells) < 2 or len(set(cells)) != len(cells):
            return False
        if len(cells) > self.max_values + len(META_KEYS):
            return False
        for cell in cells:
            if not self._valid_name(cell):
                return False
            try:
                float(cell)
            except ValueError:
                continue
            return False  # a number is never a column name
        return True

    def _valid_name(self, name: str) -> bool:
        if name in self._names:
            return True
        if len(name) > MAX_NAME_LEN or not _NAME_RE.match(name):
            return False
        if len(self._names) < _NAME_CACHE_MAX:
            self._names.add(name)
        return True

    def _check_name(self, name: str, fields_ok: int) -> None:
        if not self._valid_name(name):
            if fields_ok:
                # Bytes lost mid-line glue two fields together: a torn line.
                raise _BadLine(ParseError.PARTIAL)
            if not name.isprintable() or any(c.isspace() for c in name):
                raise _BadLine(ParseError.MALFORMED)  # prose with a colon in it, noise
            raise _BadLine(ParseError.BAD_NAME)


def parse_reply(text: str) -> dict[str, str]:
    """``INFO fw=1.2 model=x`` -> {"reply": "INFO", "fw": "1.2", "model": "x"}.

    ``PONG``, ``OK RATE``, ``ERR busy`` keep their words in ``reply``/``detail``.
    """
    words = text.split()
    if not words:
        return {"reply": ""}
    out: dict[str, str] = {"reply": words[0].upper()}
    rest: list[str] = []
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if sep and _NAME_RE.match(key) and len(out) < MAX_VALUES:
            out[key] = value[:128]
        else:
            rest.append(word)
    if rest:
        out["detail"] = " ".join(rest)[:256]
    return out
