"""python -m qspace.synthetic: see cli."""

import sys

from qspace.synthetic.cli import main

sys.exit(main())
