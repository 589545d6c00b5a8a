"""``python -m untrac.cli``."""
import sys

from . import main

sys.exit(main())
