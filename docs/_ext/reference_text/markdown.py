"""Markdown building blocks: text that came from comments and docstrings, made safe for MyST."""

import re

SPECIAL = re.compile(r"([\\*_\[\]<>|{}$~])")  # emphasis, links, HTML, table cells, roles, math
FLAG = re.compile(r"(?<![\w`-])(--[a-z][\w-]*)")  # a command-line flag in prose
COMMAND = re.compile(r"^(python3? -m \w|tlbench(-[a-z-]+)? -|mlflow ui |pip install )")  # a command to type


def escape(text: str) -> str:
    """`text` as literal Markdown: backtick spans stay code (pipes escaped for tables), command-line flags
    (`--tune`) become code (so no typography turns `--` into a dash), the rest is escaped."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans at all
        return SPECIAL.sub(r"\\\1", text).replace("`", "\\`")
    return "`".join(part.replace("|", "\\|") if i % 2 else _prose(part) for i, part in enumerate(parts))


def _prose(text: str) -> str:
    pieces = FLAG.split(text)  # odd positions: the flags
    return "".join(f"`{piece}`" if i % 2 else SPECIAL.sub(r"\\\1", piece) for i, piece in enumerate(pieces))


def code(value: str) -> str:
    """An inline code span for `value`, whatever backticks or pipes it holds."""
    fence = "``" if "`" in value else "`"
    return f"{fence}{value.replace('|', chr(92) + '|')}{fence}"


def table(header: tuple, rows: list) -> str:
    """A pipe table; cells are Markdown already."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fenced(text: str, language: str = "text") -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def comment_markdown(lines: list[str]) -> str:
    """A comment block (lines without their `#`) as Markdown: prose paragraphs, `- ` bullets (indented lines
    continue them), and commands (`python -m ...`) as a code block."""
    blocks: list[list] = []  # [kind, lines]: kind is "p", "li" or "code"
    for line in lines:
        stripped = line.strip()
        if not stripped:
            blocks.append(["p", []])
        elif COMMAND.match(stripped):
            _add(blocks, "code", stripped, join=blocks and blocks[-1][0] == "code")
        elif stripped.startswith("- "):
            _add(blocks, "li", stripped[2:], join=False)
        else:
            _add(blocks, "p", stripped, join=blocks and blocks[-1][0] in ("p", "li") and
                 (blocks[-1][0] == "p" or line.startswith(" ")))
    return "\n\n".join(_render(kind, body) for kind, body in _merged_items(blocks) if body)


def _add(blocks: list, kind: str, text: str, join) -> None:
    if join:
        blocks[-1][1].append(text)
    else:
        blocks.append([kind, [text]])


def _merged_items(blocks: list) -> list:
    """Consecutive bullets become one list block."""
    merged = []
    for kind, body in blocks:
        if kind == "li" and merged and merged[-1][0] == "ul":
            merged[-1][1].append(" ".join(body))
        elif kind == "li":
            merged.append(["ul", [" ".join(body)]])
        else:
            merged.append([kind, body])
    return merged


def _render(kind: str, body: list) -> str:
    if kind == "code":
        return fenced("\n".join(body), "bash")
    if kind == "ul":
        return "\n".join(f"- {escape(item)}" for item in body)
    return escape(" ".join(body))
