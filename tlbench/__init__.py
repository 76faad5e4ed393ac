"""tlbench: a benchmark and sweep suite for transfer learning in image classification.

Importing the package is cheap (no torch): the report and tooling import only what they use.
The training entry point is `tlbench.runner.run.run(cfg)`; the command line is `python -m tlbench`.
"""

__version__ = "0.1.0"
