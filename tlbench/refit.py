"""`python -m tlbench.refit`: select, then refit (tlbench/runner/refit.py)."""

import sys

from tlbench.runner.refit import main

if __name__ == "__main__":
    sys.exit(main())
