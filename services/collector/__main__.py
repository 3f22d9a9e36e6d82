"""``python -m services.collector``."""

from __future__ import annotations

import sys

from services.collector.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
