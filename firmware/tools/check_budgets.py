"""Print flash/RAM per firmware image and fail when one exceeds its budget.

``python tools/check_budgets.py budgets.json build/<target>/firmware.elf ...``: flash is
text + data (what is programmed), RAM is data + bss (+ the stack, which is in .bss's
neighbour .stack and counted by arm-none-eabi-size in bss). The simulated flash holding
the model slots is outside the linker's sections and reported separately by the budget
file's ``slots_bytes``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def sizes(elf: Path) -> tuple[int, int]:
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    sections = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith("."):
            sections[parts[0]] = int(parts[1])
    text = sections.get(".text", 0) + sections.get(".ARM.exidx", 0)
    data = sections.get(".data", 0)
    ram = data + sections.get(".bss", 0) + sections.get(".stack", 0)
    return text + data, ram


def main(argv: list[str]) -> int:
    budgets = json.loads(Path(argv[0]).read_text())["targets"]
    failed = False
    print(f"{'target':<12} {'flash':>8} {'budget':>8} {'ram':>8} {'budget':>8}")
    for name in argv[1:]:
        elf = Path(name)
        target = elf.parent.name
        flash, ram = sizes(elf)
        budget = budgets[target]
        over = flash > budget["flash_bytes"] or ram > budget["ram_bytes"]
        failed |= over
        print(f"{target:<12} {flash:>8} {budget['flash_bytes']:>8} {ram:>8} "
              f"{budget['ram_bytes']:>8}{'  OVER BUDGET' if over else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
