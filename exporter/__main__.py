"""``python -m exporter`` is the console script."""

import sys

from exporter.cli import main

sys.exit(main())
