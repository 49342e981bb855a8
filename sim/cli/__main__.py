"""``python -m sim.cli``: the same as the ``hetmoe`` command."""

import sys

from . import entry

sys.exit(entry())
