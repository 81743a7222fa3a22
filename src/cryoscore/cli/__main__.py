"""``python -m cryoscore.cli``: the ``cryoscore`` command."""

import sys

from cryoscore.cli import main

sys.exit(main())
