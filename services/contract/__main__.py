import sys

from services.contract.cli import main

sys.exit(main())
