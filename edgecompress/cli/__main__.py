"""`python -m edgecompress.cli` is the `edgecompress` command."""

import sys

from . import main

sys.exit(main())
