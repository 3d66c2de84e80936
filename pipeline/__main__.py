"""`python -m changesweep.pipeline` is `changesweep`."""
import sys

from changesweep.pipeline.cli import main

sys.exit(main())
