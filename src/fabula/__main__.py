"""`python -m fabula`: the `fabula` command."""

import sys

from fabula.cli import main

sys.exit(main())
