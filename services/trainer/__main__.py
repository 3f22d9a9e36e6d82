"""``python -m services.trainer``: the same as ``edgeloop train``."""

from __future__ import annotations

import sys

from services.trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
