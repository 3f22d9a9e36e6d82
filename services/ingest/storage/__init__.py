"""Storage backends behind one small interface, chosen by URL.

* ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (embedded default)
* ``influxdb://host:port?org=O&bucket=B`` (InfluxDB 2.x/3.x API; secret ``token``;
  ``&query=influxql`` for 3.x, which answers no Flux)
* ``influxdb1://host:port/dbname`` (InfluxDB 1.x API; secrets ``username``, ``password``)

Add ``tls=1`` to an InfluxDB URL for HTTPS, ``ledger=/path.db`` to place its seq ledger.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from services.ingest.storage.base import (
    MEASUREMENT,
    RESERVED_FIELDS,
    SeqRangeMap,
    Storage,
    StorageError,
    StorageUnavailable,
    WriteResult,
)
from services.ingest.storage.frame import ReadingFrame
from services.ingest.storage.ledger import SeqLedger

__all__ = [
    "MEASUREMENT",
    "RESERVED_FIELDS",
    "ReadingFrame",
    "SeqRangeMap",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "WriteResult",
    "default_state_dir",
    "open_storage",
]

SCHEMES = ("sqlite", "influxdb", "influxdb1")


def default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "edgeloop"


def _ledger_path(params: dict[str, str], state_dir: Path, *parts: str) -> Path:
    if params.get("ledger"):
        return Path(params["ledger"])
    name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts if p)
    return state_dir / f"ledger-{name}.db"


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in {"1", "true", "yes", "on"}


def open_storage(
    url: str, *, state_dir: Path | None = None, **secrets: str | None
) -> Storage:
    """Open the backend a URL names. ``secrets``: ``token``, ``username``, ``password``.

    ``state_dir`` holds the InfluxDB backends' seq ledgers (default
    ``~/.local/state/edgeloop``), opened only once something is written.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    state = state_dir if state_dir is not None else default_state_dir()
    unknown = set(secrets) - {"token", "username", "password"}
    if unknown:
        raise ValueError(f"unknown storage secrets: {', '.join(sorted(unknown))}")
    if scheme == "sqlite":
        from services.ingest.storage.sqlite import SqliteStorage

        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ValueError(f"{url!r}: sqlite URLs look like sqlite:///path.db")
        return SqliteStorage(path, synchronous=params.get("synchronous", "FULL"))
    if scheme not in SCHEMES:
        raise ValueError(f"{url!r}: unknown storage scheme {scheme!r} (use {', '.join(SCHEMES)})")
    if not parts.hostname:
        raise ValueError(f"{url!r}: missing host")
    proto = "https" if _truthy(params.get("tls")) else "http"
    port = parts.port or 8086
    http_url = f"{proto}://{parts.hostname}:{port}"
    if scheme == "influxdb1":
        from services.ingest.storage.influx1 import Influx1Storage

        database = parts.path.strip("/")
        if not database:
            raise ValueError(f"{url!r}: influxdb1 URLs look like influxdb1://host:port/dbname")
        ledger_path = _ledger_path(params, state, scheme, parts.hostname, str(port), database)
        return Influx1Storage(
            http_url, database, lambda: SeqLedger(ledger_path),
            username=secrets.get("username"), password=secrets.get("password"),
            retention_policy=params.get("rp"),
            create=params.get("create", "1") not in {"0", "false", "no"},
        )
    from services.ingest.storage.influx2 import Influx2Storage, QueryLanguage

    org, bucket = params.get("org"), params.get("bucket")
    if not org or not bucket:
        raise ValueError(f"{url!r}: influxdb URLs need ?org=...&bucket=...")
    try:
        language = QueryLanguage(params.get("query", "flux").lower())
    except ValueError:
        raise ValueError(f"{url!r}: query= is flux (InfluxDB 2.x) or influxql (3.x)") from None
    ledger_path = _ledger_path(params, state, scheme, parts.hostname, str(port), org, bucket)
    return Influx2Storage(http_url, org, bucket, lambda: SeqLedger(ledger_path),
                          token=secrets.get("token"), query_language=language)
