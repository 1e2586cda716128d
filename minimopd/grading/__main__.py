"""`python -m minimopd.grading NOTEBOOK [--lab labNN] [-v]` (same as `minimopd grade`)."""
import sys

from . import main

sys.exit(main())
