import sys

from liftoff.readers.cli import main

sys.exit(main())
