"""Sphinx configuration: Markdown pages through MyST, the Furo theme, built warnings-as-errors
(`sphinx-build -W --keep-going -b html docs <out>`, as .ci/run does)."""

import os
import sys

project = "tlbench"
author = "the tlbench authors"
copyright = "2026, the tlbench authors"

extensions = ["myst_parser"]
# The reference pages are generated from conf/ and the code by an extension of our own (docs/_ext).
_EXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext")
if os.path.exists(os.path.join(_EXT, "tlbench_reference.py")):
    sys.path.insert(0, _EXT)
    extensions.append("tlbench_reference")

source_suffix = {".md": "markdown"}
root_doc = "index"
# Only build outputs are left out: every page under docs/ must be in a toctree (Sphinx warns otherwise).
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # `[text](page.md#a-heading)` links resolve to the heading's slug

html_theme = "furo"
html_title = "tlbench"
