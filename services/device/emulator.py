"""Build the firmware and run it under QEMU (or as a host process) as a serial device.

Used by the firmware tests and benchmarks, and handy for trying `edgeloop device` and the
collector without hardware: the UART is a TCP server that pyserial opens as
``socket://127.0.0.1:PORT``. A QMP socket gives a real machine reset (RAM that holds the
simulated flash survives it, as flash survives a reset pin).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from services.common.net import free_port
from services.device.link import DeviceLink

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
BUILD = FIRMWARE / "build"
MACHINES = {"mps2-an385": "mps2-an385", "mps2-an386": "mps2-an386", "stm32f4": "netduinoplus2"}
#: QEMU gives -serial options to the SoC's UARTs in order: on the STM32F405 the first is
#: USART1, and the Nucleo's ST-LINK port (what the firmware uses) is USART2.
SERIAL_BEFORE = {"stm32f4": ["-serial", "null"]}


class EmulatorError(RuntimeError):
    pass


def toolchain_missing() -> str | None:
    """Name of the first missing tool, or None when the firmware can be built and run."""
    for tool in ("make", "gcc", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        if shutil.which(tool) is None:
            return tool
    return None


def make(*targets: str, timeout_s: float = 300.0, extra: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    args = ["make", "-C", str(FIRMWARE), f"-j{min(2, os.cpu_count() or 1)}", *targets]
    args += [f"{k}={v}" for k, v in (extra or {}).items()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise EmulatorError(f"make {' '.join(targets)} failed:\n{proc.stdout[-3000:]}"
                            f"\n{proc.stderr[-3000:]}")
    return proc


def elf(target: str, name: str = "firmware.elf") -> Path:
    return BUILD / target / name


def run_semihosted(target: str, image: Path, *, timeout_s: float = 120.0,
                   icount: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a test/bench ELF whose semihosting exit status becomes QEMU's."""
    args = ["qemu-system-arm", "-M", MACHINES[target], "-nographic", "-monitor", "none",
            "-serial", "null", "-semihosting-config", "enable=on,target=native",
            "-kernel", str(image)]
    if icount:
        # One instruction = 1 ns of virtual time: the SysTick count becomes an
        # instruction count (see docs/firmware.md).
        args[1:1] = ["-icount", "shift=0"]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)


class QemuDevice:
    """The firmware in QEMU with its UART on a loopback TCP port."""

    def __init__(self, target: str = "mps2-an385", image: Path | None = None,
                 log_path: Path | None = None) -> None:
        self.target = target
        self.image = image or elf(target)
        self.port = free_port()
        self.qmp_port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        args = [
            "qemu-system-arm", "-M", MACHINES[self.target], "-nographic", "-monitor", "none",
            "-qmp", f"tcp:127.0.0.1:{self.qmp_port},server=on,wait=off",
            # wait=on: the machine starts when the first client (the collector, a test)
            # connects, so no line is lost before anyone listens.
            *SERIAL_BEFORE.get(self.target, []),
            "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=on,nodelay=on",
            "-kernel", str(self.image),
        ]
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log_path and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmulatorError(f"qemu exited with {self.proc.returncode}")
            if _listening(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"qemu did not listen on {self.port} within {timeout_s} s")

    def link(self, **kwargs: Any) -> DeviceLink:
        """Open the UART (which starts the machine) and wait until the firmware is up."""
        link = DeviceLink(self.url, **kwargs)
        try:
            link.wait_banner()
        except BaseException:
            link.close()
            raise
        return link

    def _qmp(self, command: str) -> dict[str, object]:
        with socket.create_connection(("127.0.0.1", self.qmp_port), timeout=5.0) as s:
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    msg = json.loads(f.readline())
                    if "return" in msg or "error" in msg:
                        break
            result: dict[str, object] = msg
            return result

    def system_reset(self) -> None:
        """Press the reset button: the CPU restarts, the simulated flash keeps its data."""
        reply = self._qmp("system_reset")
        if "error" in reply:
            raise EmulatorError(f"system_reset failed: {reply}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> QemuDevice:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _listening(port: int) -> bool:
    # Probing QEMU's wait=on serial server would count as its one client; look at the
    # kernel's table of listening sockets instead.
    hexport = f"{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[1].endswith(":" + hexport) and parts[3] == "0A":
                return True
    return False
