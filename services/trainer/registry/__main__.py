"""``python -m services.trainer.registry`` = ``edgeloop registry``."""

import sys

from services.trainer.registry.cli import main

sys.exit(main())
