"""`python -m tlbench.lr_find`: the LR finder's command (tlbench/runner/lr_find.py)."""

import sys

from tlbench.runner.lr_find import main

if __name__ == "__main__":
    sys.exit(main())
