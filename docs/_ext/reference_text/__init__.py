"""The reference pages' text, generated from the code and conf/ (docs/reference/*.md call these through the
Sphinx directives in docs/_ext/tlbench_reference.py). Plain functions returning Markdown: no Sphinx needed,
so tests/test_reference_docs.py checks them directly."""
