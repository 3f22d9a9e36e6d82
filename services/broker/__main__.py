"""``python -m services.broker`` = ``edgeloop broker``."""

import sys

from services.broker.cli import main

sys.exit(main(sys.argv[1:]))
