"""`python -m tlbench.soup`: model soups of a sweep's fine-tuned models (tlbench/runner/soup.py)."""

import sys

from tlbench.runner.soup import main

if __name__ == "__main__":
    sys.exit(main())
