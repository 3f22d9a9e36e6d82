"""InfluxDB line protocol for readings: one point per reading.

``readings,device=<id>,site=<id> seq=<n>i[,flags="a,b"],<name>=<float>... <ts ns>``

Device and site are tags (the series key), the values are float fields, ``seq`` is an
integer field and ``flags`` a string field only when set. Device/site ids are contract
ids (``[A-Za-z0-9_.-]``) and need no escaping; value names may hold any character but
the few line protocol reserves, which are escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from operator import add

from services.contract.models import Reading
from services.ingest.storage.base import MEASUREMENT


@lru_cache(maxsize=4096)
def field_key(name: str) -> str:
    return name.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _string_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Escaped ``name=`` prefixes per tuple of value names: a fleet sends few distinct shapes.
_PREFIXES: dict[tuple[str, ...], tuple[str, ...]] = {}
_PREFIXES_MAX = 4096


def _prefixes(names: tuple[str, ...]) -> tuple[str, ...]:
    found = _PREFIXES.get(names)
    if found is None:
        found = tuple(field_key(n) + "=" for n in names)
        if len(_PREFIXES) < _PREFIXES_MAX:
            _PREFIXES[names] = found
    return found


def encode(readings: Iterable[Reading]) -> list[str]:
    """One line per reading, timestamp in nanoseconds."""
    out: list[str] = []
    append = out.append
    for r in readings:
        values = r.values
        # repr() of a float is its shortest round-trip form, which line protocol accepts.
        fields = ",".join(map(add, _prefixes(tuple(values)), map(repr, values.values())))
        flags = f",flags={_string_value(','.join(r.flags))}" if r.flags else ""
        append(
            f"{MEASUREMENT},device={r.device},site={r.site} seq={r.seq}i{flags},{fields} {r.ts}"
        )
    return out


def chunks(lines: Sequence[str], size: int) -> Iterable[str]:
    """Newline-joined request bodies of at most ``size`` lines each."""
    for i in range(0, len(lines), size):
        yield "\n".join(lines[i : i + size])
