import sys

from services.demo.cli import main

sys.exit(main())
