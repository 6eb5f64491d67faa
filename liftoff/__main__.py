import sys

from liftoff.entry.cli import main

sys.exit(main())
