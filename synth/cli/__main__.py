"""``python -m synth.cli``: the same as the ``synth`` command."""

import sys

from synth.cli import main

sys.exit(main())
