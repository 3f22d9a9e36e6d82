"""A serial link to a device: send command lines, wait for their ``@`` replies.

Readings the device streams meanwhile are handed to ``on_line`` (or dropped), so a command
can be issued while the device keeps sampling. Works with any pyserial URL: a tty
(``/dev/ttyACM0``), a pty, or ``socket://127.0.0.1:PORT`` (QEMU's UART over TCP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import serial

from services.device.protocol import DeviceInfo, Reply, ReplyKind, parse_reply


class LinkError(RuntimeError):
    """The device did not answer in time, or the line broke."""


class DeviceLink:
    def __init__(self, port: str, *, baud: int = 115200, timeout_s: float = 5.0,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.on_line = on_line
        self._buf = bytearray()
        try:
            self._serial: Any = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(f"cannot open {port}: {exc}") from None

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"write to {self.port} failed: {exc}") from None

    def send_line(self, text: str) -> None:
        self.write(text.encode("ascii") + b"\n")

    def read_line(self, deadline: float) -> str | None:
        """The next complete line, or None at the deadline (time.monotonic())."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                raw = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return raw.decode("ascii", "replace").rstrip("\r")
            if time.monotonic() >= deadline:
                return None
            try:
                # read(1) returns as soon as a byte arrives; read(4096) would sit out the
                # whole timeout on a quiet line. Then take whatever else is waiting.
                chunk = self._serial.read(1)
                if chunk:
                    chunk += self._serial.read(self._serial.in_waiting)
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"read from {self.port} failed: {exc}") from None
            self._buf += chunk

    def wait_reply(self, accept: Callable[[Reply], bool], timeout_s: float | None = None
                   ) -> Reply:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise LinkError(f"no reply from {self.port} within "
                                f"{self.timeout_s if timeout_s is None else timeout_s} s")
            reply = parse_reply(line)
            if reply is not None and accept(reply):
                return reply
            if reply is None and self.on_line is not None:
                self.on_line(line)

    def command(self, text: str, *kinds: ReplyKind, timeout_s: float | None = None,
                retries: int = 1) -> Reply:
        """Send a command line; return its reply (one of ``kinds``, or @ERR).

        Line commands are idempotent, so a command that got no answer is sent again
        (``retries`` times): a device that was still booting drops what it receives."""
        wanted = set(kinds) | {ReplyKind.ERR}
        for attempt in range(retries + 1):
            self.send_line(text)
            try:
                return self.wait_reply(lambda r: r.kind in wanted, timeout_s)
            except LinkError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def wait_banner(self, timeout_s: float = 10.0) -> None:
        """Wait for the boot banner (``# edgeloop fw ...``): the firmware listens now."""
        deadline = time.monotonic() + timeout_s
        while (line := self.read_line(deadline)) is not None:
            if line.startswith("# edgeloop"):
                return
            if self.on_line is not None:
                self.on_line(line)
        raise LinkError(f"no boot banner from {self.port} within {timeout_s} s")

    def ping(self) -> bool:
        return self.command("PING", ReplyKind.PONG).kind is ReplyKind.PONG

    def info(self) -> DeviceInfo:
        reply = self.command("INFO", ReplyKind.INFO)
        if reply.kind is not ReplyKind.INFO:
            raise LinkError(f"INFO failed: {reply.text}")
        return DeviceInfo.from_reply(reply)
