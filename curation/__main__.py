"""Entry point of ``python -m curation``."""

import sys

from curation.cli import main

sys.exit(main())
