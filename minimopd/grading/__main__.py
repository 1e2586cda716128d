"""`python -m minimopd.grading [NOTEBOOK] [--lab labNN] [--json] [-v] [--time-limit S]` (same as `minimopd grade`)."""
import sys

from . import main

sys.exit(main())
