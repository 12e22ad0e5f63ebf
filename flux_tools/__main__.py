"""``python -m flux_tools``: the same as the ``flux-tools`` command."""

import sys

from .cli import main

sys.exit(main())
