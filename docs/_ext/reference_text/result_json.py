"""The result.json reference, from its one description (tlbench/records/schema.py)."""

from reference_text.markdown import code, escape, table

from tlbench.records import schema
from tlbench.records.results import RESULT_FILE, SCHEMA_VERSION


def result_json_markdown() -> str:
    parts = [f"Schema version {SCHEMA_VERSION}: one {code(RESULT_FILE)} per run folder.",
             table(("field", "type", "meaning", "present"), _rows(schema.FIELDS))]
    parts += _nested(schema.FIELDS, "")
    return "\n\n".join(parts)


def _rows(fields: tuple) -> list:
    return [(code(f.name), escape(f.type), escape(f.meaning) + (" (below)" if f.keys else ""),
             escape(f.when) if f.when else "always") for f in fields]


def _nested(fields: tuple, prefix: str) -> list:
    """A section per object (or list of objects) with keys of its own, depth first."""
    parts = []
    for f in fields:
        if f.keys:
            name = f"{prefix}{f.name}" + ("[]" if f.type.startswith("list") else "")
            parts += [f"## {name}", escape(f.meaning) + ".", table(("key", "type", "meaning", "present"), _rows(f.keys))]
            parts += _nested(f.keys, f"{name}.")
    return parts
