import sys

from liftoff.cli import main

sys.exit(main(["reader", *sys.argv[1:]]))
