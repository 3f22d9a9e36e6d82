"""Render mosquitto.conf (from the packaged template) and the ACL into a directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from services.broker.acl import render_acl
from services.broker.settings import BrokerSettings

CONF_NAME = "mosquitto.conf"
ACL_NAME = "acl"


@dataclass(frozen=True, slots=True)
class Rendered:
    config: Path
    acl: Path


def _listeners(s: BrokerSettings) -> str:
    blocks: list[str] = []
    if s.port:
        blocks.append(
            "\n".join([
                "# --- plain MQTT (passwords; keep it on a trusted network) ---",
                f"listener {s.port} {s.host}",
                "protocol mqtt",
            ])
        )
    if s.tls_port:
        blocks.append(
            "\n".join([
                "# --- MQTT over TLS ---",
                f"listener {s.tls_port} {s.tls_host}",
                "protocol mqtt",
                f"cafile {s.cafile}",
                f"certfile {s.certfile}",
                f"keyfile {s.keyfile}",
                f"tls_version {s.tls_version.value}",
                f"require_certificate {'true' if s.require_certificate else 'false'}",
            ])
        )
    return "\n\n" + "\n\n".join(blocks)


def render_config(settings: BrokerSettings) -> str:
    template = Template(
        resources.files("services.broker").joinpath("mosquitto.conf.tmpl").read_text()
    )
    values = {
        "password_file": settings.password_file,
        "acl_file": settings.acl_file,
        "data_dir": str(settings.data_dir).rstrip("/"),
        "autosave_interval_s": settings.autosave_interval_s,
        "persistent_client_expiration": settings.persistent_client_expiration,
        "max_inflight_messages": settings.max_inflight_messages,
        "max_queued_messages": settings.max_queued_messages,
        "max_queued_bytes": settings.max_queued_bytes,
        "max_packet_size": settings.max_packet_size,
        "log_dest": settings.log_dest,
        "run_as": settings.run_as,
        "listeners": _listeners(settings),
    }
    return template.substitute(values)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def render(settings: BrokerSettings, out_dir: Path) -> Rendered:
    """Write ``mosquitto.conf`` and ``acl`` into ``out_dir``.

    The config refers to ``settings.acl_file`` (where the ACL lives at run time, e.g. a
    mounted Secret); the ACL written here is what belongs at that path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = out_dir / CONF_NAME
    acl = out_dir / ACL_NAME
    _write(conf, render_config(settings), 0o644)
    # The ACL names every service and client account: not secret, but not public either.
    _write(acl, render_acl(settings.accounts), 0o640)
    return Rendered(conf, acl)
