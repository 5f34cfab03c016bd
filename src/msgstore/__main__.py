"""``python -m msgstore``: the same command line as ``msgstore``."""

import sys

from .cli import main

sys.exit(main())
