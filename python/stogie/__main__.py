"""`python -m stogie MODULE:APP [options]`."""

import sys

from stogie.cli import main

sys.exit(main())
