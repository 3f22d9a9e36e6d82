"""Commands from the cmd topic as lines for the device (interface: the serial protocol)."""

from __future__ import annotations

import re
from typing import Final

from services.contract.models import Command, CommandName

#: Argument tokens that can go on a serial line: no spaces, no line breaks, nothing that
#: could smuggle a second command onto the line.
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_.:=+\-]{1,64}$")
_MODES: Final = frozenset({"all", "filter"})


class CommandError(ValueError):
    pass


def _token(value: object, what: str) -> str:
    text = str(value)
    if not _TOKEN.match(text):
        raise CommandError(f"{what} {text!r} is not a plain token")
    return text


def serial_line(command: Command) -> str:
    """The line to write to the device for ``command`` (without the newline)."""
    name, args = command.command, command.args
    if name is CommandName.PING:
        return "PING"
    if name is CommandName.INFO:
        return "INFO"
    if name is CommandName.RATE:
        ms = args.get("ms", args.get("rate_ms"))
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 1 <= ms <= 3_600_000:
            raise CommandError("rate needs args.ms, 1..3600000")
        return f"RATE {int(ms)}"
    if name is CommandName.MODE:
        mode = str(args.get("mode", ""))
        if mode not in _MODES:
            raise CommandError("mode needs args.mode = all|filter")
        return f"MODE {mode}"
    if name is CommandName.FAULT:
        kind = args.get("kind")
        if kind is None:
            raise CommandError("fault needs args.kind")
        extra = [_token(v, f"fault arg {k}") for k, v in args.items() if k != "kind"]
        return " ".join(["FAULT", _token(kind, "fault kind"), *extra])
    raise CommandError(
        f"{name.value} cannot be relayed as a line (model updates use "
        "`edgeloop device update-model` on the device's host)"
    )
