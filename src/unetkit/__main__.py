"""`python -m unetkit` runs the command line."""

import sys

from unetkit.cli import main

sys.exit(main())
