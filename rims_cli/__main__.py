"""``python -m rims_cli``: the ``rims`` command without its console script."""

import sys

from .main import main

sys.exit(main())
