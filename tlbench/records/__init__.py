"""Records: the result.json schema, run identity and atomic writes. Torch-free (the report uses them on
JSON alone)."""
