"""`python -m minimopd.scale ...`: what `torchrun ... -m minimopd.scale train DIR` runs per process."""
import sys

from .launch import main

sys.exit(main())
