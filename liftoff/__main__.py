import sys

from liftoff.cli import main

sys.exit(main())
