"""Settings for ``edgeloop device``."""

from __future__ import annotations

from pydantic import Field

from services.common.config import Settings


class DeviceSettings(Settings):
    #: A tty, a pty or a pyserial URL (``socket://127.0.0.1:PORT`` for QEMU).
    port: str = ""
    baud: int = Field(default=115200, gt=0)
    #: Seconds to wait for a reply to a command.
    timeout_s: float = Field(default=5.0, gt=0)
    #: Registry URL (http://...) or a local store directory, for ``--model NAME[@V]``.
    registry: str | None = None
    #: Ed25519 public key (PEM) that registry bundles must be signed with.
    public_key: str | None = None
    #: Whole-transfer attempts; each resumes where the device's last ACK left off.
    attempts: int = Field(default=3, ge=1, le=20)
    chunk: int = Field(default=128, ge=16, le=256)
    log_level: str = "INFO"
