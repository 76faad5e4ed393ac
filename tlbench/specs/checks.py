"""The two helpers every spec uses: a range check that names the key, and an unknown-key check."""

from dataclasses import fields

from tlbench.errors import ConfigError


def require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} {rule}")


def closed(schema, values, group: str) -> dict:
    """`values` as a plain dict, failing on a key `schema` does not have (naming the ones it has)."""
    values = dict(values)
    unknown = sorted(set(values) - {f.name for f in fields(schema)})
    if unknown:
        raise ConfigError(f"{group} does not take {', '.join(unknown)}; it takes "
                          f"{', '.join(f.name for f in fields(schema))}")
    return values
