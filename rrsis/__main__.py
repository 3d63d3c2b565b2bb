"""`python -m rrsis ...`: the same command line as the `rrsis` script."""

import sys

from rrsis.cli import main

sys.exit(main())
