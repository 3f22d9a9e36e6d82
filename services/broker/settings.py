"""What ``edgeloop broker render`` needs to know: listeners, paths, limits and accounts.

The defaults are the paths inside the broker image, so ``edgeloop broker render`` with no
options renders the image's own config. Tests and hosts pass their own paths.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from services.common.config import Settings
from services.contract.limits import MAX_PAYLOAD_BYTES

#: Room for the fixed header, topic and MQTT v5 properties on top of the largest payload.
PACKET_OVERHEAD_BYTES = 8 * 1024


class Role(enum.StrEnum):
    """What an account may do. Devices need no entry: their rules are ``%u`` patterns."""

    INGEST = "ingest"
    INFERENCE = "inference"
    REGISTRY = "registry"
    CLIENT = "client"
    OBSERVER = "observer"


class TlsVersion(enum.StrEnum):
    V1_2 = "tlsv1.2"
    V1_3 = "tlsv1.3"


class Accounts(Settings):
    """Usernames per role. Device accounts are not listed: a device's username is its id.

    Service usernames must never be used as device ids, because the device ``pattern``
    rules apply to every account: render refuses overlapping roles, and ``passwd
    --device`` refuses a reserved name.
    """

    ingest: list[str] = Field(default_factory=lambda: ["ingest"])
    inference: list[str] = Field(default_factory=lambda: ["inference"])
    registry: list[str] = Field(default_factory=lambda: ["registry"])
    client: list[str] = Field(default_factory=list)
    observer: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> Accounts:
        seen: dict[str, Role] = {}
        for role in Role:
            for name in self.for_role(role):
                _check_username(name)
                if name in seen:
                    raise ValueError(
                        f"account {name!r} is listed as {seen[name].value} and {role.value}; "
                        "one role per account"
                    )
                seen[name] = role
        return self

    def for_role(self, role: Role) -> list[str]:
        names: list[str] = getattr(self, role.value)
        return names

    def reserved(self) -> set[str]:
        return {name for role in Role for name in self.for_role(role)}


def _check_username(name: str) -> None:
    # Mosquitto refuses to expand %u for names with wildcards or slashes, and the ACL and
    # password files are line based.
    bad = set(name) & set("+#/:\n\r\t ")
    if not name or bad:
        raise ValueError(f"invalid username {name!r}: no spaces, ':', '/', '+' or '#'")


class BrokerSettings(Settings):
    #: Plain MQTT listener (passwords still required). 0 disables it.
    host: str = "0.0.0.0"
    port: int = Field(default=1883, ge=0, le=65535)
    #: TLS listener. 0 disables it.
    tls_host: str = "0.0.0.0"
    tls_port: int = Field(default=8883, ge=0, le=65535)
    tls_version: TlsVersion = TlsVersion.V1_2
    #: Also demand a client certificate signed by the CA (on top of the password).
    require_certificate: bool = False
    cafile: Path = Path("/mosquitto/certs/ca.crt")
    certfile: Path = Path("/mosquitto/certs/server.crt")
    keyfile: Path = Path("/mosquitto/certs/server.key")

    password_file: Path = Path("/mosquitto/secrets/passwd")
    acl_file: Path = Path("/mosquitto/secrets/acl")
    data_dir: Path = Path("/mosquitto/data")
    #: ``stdout``, ``stderr`` or ``file <path>`` (Mosquitto's own log_dest syntax).
    log_dest: str = "stdout"
    #: The account Mosquitto drops to when started as root (its ``user`` option). The
    #: image starts it as uid 1883 already, so this only matters on a host.
    run_as: str = Field(default="mosquitto", pattern=r"^[a-z_][a-z0-9_-]*$")

    #: Seconds between persistence saves. A SIGKILL loses what arrived since the last save;
    #: ingest detects the gap by sequence number and asks the collector to resend.
    autosave_interval_s: int = Field(default=30, ge=1)
    #: Per-client queue beyond the in-flight window. Mosquitto's default of 1000 drops
    #: messages for an ingest replica that restarts under load; when full, new messages for
    #: that client are dropped and counted in $SYS/broker/publish/messages/dropped.
    max_queued_messages: int = Field(default=100_000, ge=1)
    max_queued_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    #: Unacknowledged QoS 1 messages per client. Ingest acknowledges a message only after
    #: its batch is written, so this caps the messages one ingest replica can hold per
    #: batch window (batch_wait_s): 10,000 per 0.25 s. Mosquitto's default of 20 would cap
    #: a replica at 80 single-reading messages/s.
    max_inflight_messages: int = Field(default=10_000, ge=0)
    max_packet_size: int = Field(
        default=MAX_PAYLOAD_BYTES + PACKET_OVERHEAD_BYTES, ge=1024, le=268_435_455
    )
    #: MQTT 3.1.1 persistent sessions of clients that never return are removed after this.
    persistent_client_expiration: str = Field(default="14d", pattern=r"^[0-9]+[hdwmy]$")

    accounts: Accounts = Field(default_factory=Accounts)

    @field_validator("*", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        # Every value lands on one line of mosquitto.conf: a newline would inject config.
        if isinstance(value, str | Path) and any(c in str(value) for c in "\n\r"):
            raise ValueError("must be a single line")
        return value

    @field_validator("log_dest")
    @classmethod
    def _log_dest(cls, value: str) -> str:
        if value in {"stdout", "stderr"} or value.startswith("file /"):
            return value
        raise ValueError("use stdout, stderr or 'file /absolute/path'")

    @model_validator(mode="after")
    def _some_listener(self) -> BrokerSettings:
        if self.port == 0 and self.tls_port == 0:
            raise ValueError("both listeners are disabled (port and tls_port are 0)")
        if self.port and self.port == self.tls_port:
            raise ValueError("port and tls_port must differ")
        return self
