import sys

from services.device.cli import main

sys.exit(main(sys.argv[1:]))
