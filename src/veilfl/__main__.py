"""``python -m veilfl``."""

import sys

from veilfl.cli.main import main

sys.exit(main())
