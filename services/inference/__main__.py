"""``python -m services.inference``: the same as ``edgeloop serve``."""

import sys

from services.inference.cli import main

sys.exit(main(sys.argv[1:]))
