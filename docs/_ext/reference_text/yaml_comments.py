"""A config file's values (OmegaConf) and its comments (a line reader): the header comment, and per dotted key
the comment on its line, the aligned lines continuing it and a comment block right above it."""

import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

KEY = re.compile(r"^(?P<indent>\s*)(?P<item>-\s+)?(?P<key>[A-Za-z_/][\w./ -]*?)\s*:(?:\s+|$)(?P<rest>.*)$")


@dataclass
class YamlFile:
    path: Path
    package: str | None  # the `# @package` line's value, if any
    header: list[str]  # the leading comment block, without `#`
    values: dict  # the loaded file, interpolations unresolved
    comments: dict[str, str] = field(default_factory=dict)  # dotted key -> its comment
    raw: dict[str, str] = field(default_factory=dict)  # dotted key -> the value as written on its line

    def leaves(self) -> dict:
        """{dotted key: value} of every setting but the defaults list (empty mappings and lists are values)."""
        return {key: value for key, value in _flatten(self.values).items() if key != "defaults"}

    def defaults(self) -> list:
        return list(self.values.get("defaults") or [])


def read(path: Path) -> YamlFile:
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    package = next((line.split("@package", 1)[1].strip() for line in lines if line.startswith("# @package")), None)
    parsed = YamlFile(path, package, _header(lines), values)
    _read_comments(lines, parsed)
    return parsed


def _header(lines: list[str]) -> list[str]:
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            header.append(line[1:].removeprefix(" "))
    return header


def _read_comments(lines: list[str], parsed: YamlFile) -> None:
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings the current line is inside
    above: list[str] = []  # a comment block waiting for the key below it
    last = None  # (dotted key, column of its comment) while aligned lines may continue that comment
    lead = len(parsed.header) + (parsed.package is not None)  # the header's lines come first
    for line in lines[lead:]:
        stripped = line.strip()
        if not stripped:
            above, last = [], None
            continue
        if stripped.startswith("#"):
            column = line.index("#")
            if last and column == last[1]:
                parsed.comments[last[0]] += " " + stripped[1:].strip()
            else:
                above.append(stripped[1:].strip())
                last = None
            continue
        match = KEY.match(line)
        if not match:  # a list item without a key, a flow mapping: nothing to name
            above, last = [], None
            continue
        indent = len(match["indent"]) + len(match["item"] or "")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([*(k for _, k in stack), match["key"]])
        value, comment, at = _split_comment(match["rest"])
        parsed.comments[key] = " ".join([*above, comment]).strip()
        if value:
            parsed.raw[key] = value
        elif not match["item"]:
            stack.append((indent, match["key"]))
        above, last = [], (key, len(line) - len(match["rest"]) + at) if comment else None


def _split_comment(rest: str) -> tuple[str, str, int | None]:
    """(value, comment, where the comment starts in `rest`): a `#` after a space, outside quotes."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip(), i
    return rest.strip(), "", None


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
