"""``python -m untrac ...``: the same command line as ``untrac ...`` (:mod:`untrac.cli`)."""
import sys

from .cli import main

sys.exit(main())
