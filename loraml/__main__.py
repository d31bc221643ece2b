import sys

from loraml.cli import main

sys.exit(main())
