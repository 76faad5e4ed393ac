"""The configuration reference: conf/config.yaml's settings and defaults, every group's options with every key,
its default and its comment, and the experiment presets with what they set. Read from conf/ itself."""

from pathlib import Path

from reference_text.markdown import code, comment_markdown, escape, table
from reference_text.yaml_comments import YamlFile, read

from tlbench.configs import CONFIG_NAME, config_dir

PRESETS = "experiment"  # presets set many groups at once: listed apart from the groups
COLUMNS = ("key", "default", "comment")


def groups(conf: Path | None = None) -> dict[str, list[str]]:
    """{group: its options}: every folder under conf/ holding option files (hydra/launcher included)."""
    conf = conf or config_dir()
    found = {}
    for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if options:
            found[folder.relative_to(conf).as_posix()] = options
    return found


def option_file(group: str, option: str, conf: Path | None = None) -> YamlFile:
    return read((conf or config_dir()) / group / f"{option}.yaml")


def label(group: str, option: str | None = None) -> str:
    """The anchor users link to: config-<group>[-<option>] (docs/reference/config.md)."""
    return "-".join(["config", group.replace("/", "-"), *([option] if option else [])])


def settings_markdown(conf: Path | None = None) -> str:
    """conf/config.yaml: which option each group starts at, the top-level settings, the Hydra settings tlbench sets."""
    primary = read((conf or config_dir()) / f"{CONFIG_NAME}.yaml")
    settings = {k: v for k, v in primary.leaves().items() if not k.startswith("hydra.")}
    hydra = {k: v for k, v in primary.leaves().items() if k.startswith("hydra.")}
    return "\n\n".join([
        comment_markdown(primary.header),
        f"({label('defaults')})=\n## Groups and the option each starts at",
        table(("group", "default option", "comment"), _defaults_rows(primary)),
        f"({label('settings')})=\n## Settings",
        "Override any of them on the command line, e.g. `epochs=3` or `data.pipeline=pil`.",
        table(COLUMNS, _rows(primary, settings)),
        f"({label('hydra')})=\n## Hydra settings tlbench sets",
        table(COLUMNS, _rows(primary, hydra)),
    ])


def groups_markdown(conf: Path | None = None) -> str:
    """Every group but the presets: its options, each with its header comment and a table of its keys."""
    parts = []
    for group, options in groups(conf).items():
        if group == PRESETS:
            continue
        choices = ", ".join(f"{{ref}}`{option} <{label(group, option)}>`" for option in options)
        parts += [f"({label(group)})=\n## {group}", f"Choose one with {code(f'{group}=<option>')}: {choices}."]
        parts += [_option_markdown(group, option, conf) for option in options]
    return "\n\n".join(parts)


def experiments_markdown(conf: Path | None = None) -> str:
    """The presets (`experiment=<name>`): what each is for and everything it sets."""
    presets = groups(conf).get(PRESETS, [])
    choices = ", ".join(f"{{ref}}`{option} <{label(PRESETS, option)}>`" for option in presets)
    parts = [f"({label(PRESETS)})=\n## {PRESETS}",
             f"A preset ({code(f'{PRESETS}=<name>')}) chooses options of several groups and sets keys, listing only "
             f"what it changes; overrides after it on the command line still win: {choices}."]
    for option in presets:
        preset = option_file(PRESETS, option, conf)
        parts += [f"({label(PRESETS, option)})=\n### {PRESETS}={option}", comment_markdown(preset.header),
                  _composition(PRESETS, preset, conf)]
        if preset.leaves():
            parts += ["Sets:", table(("key", "value", "comment"), _rows(preset, preset.leaves()))]
    return "\n\n".join(part for part in parts if part)


def _option_markdown(group: str, option: str, conf: Path | None) -> str:
    found = option_file(group, option, conf)
    prefix = _package(group, found)
    parts = [f"({label(group, option)})=\n### {group}={option}", comment_markdown(found.header),
             _composition(group, found, conf)]
    if found.leaves():
        parts.append(table(COLUMNS, _rows(found, found.leaves(), prefix)))
    return "\n\n".join(part for part in parts if part)


def _package(group: str, found: YamlFile) -> str:
    """The dotted prefix an option's keys land under: the group's path, or its `# @package`."""
    package = found.package if found.package is not None else group.replace("/", ".")
    return "" if package == "_global_" else f"{package}."


def _composition(group: str, found: YamlFile, conf: Path | None) -> str:
    """What an option's defaults list brings in: another option it builds on (linked when it is one of this group's
    in conf/), and the options of other groups it chooses (`override /model: x`)."""
    siblings = set(groups(conf).get(group, []))
    bases = [f"{{ref}}`{group}={entry} <{label(group, entry)}>`" if entry in siblings else code(entry)
             for entry in found.defaults() if isinstance(entry, str)]
    chosen = [code(_override(entry)) for entry in found.defaults() if isinstance(entry, dict)]
    said = [f"Builds on {', '.join(bases)}." if bases else "", f"Chooses {', '.join(chosen)}." if chosen else ""]
    return " ".join(part for part in said if part)


def _override(entry) -> str:
    """A defaults-list entry as the command-line choice it makes (`override /model: x` -> model=x)."""
    (key, value), = entry.items()
    return f"{key.removeprefix('override ').lstrip('/')}={_flow(value)}"


def _defaults_rows(primary: YamlFile) -> list:
    rows = []
    for entry in primary.defaults():
        if isinstance(entry, dict):
            (group, option), = entry.items()
            shown = code(_flow(option)) if option is None else f"{{ref}}`{option} <{label(group, option)}>`"
            rows.append((f"{{ref}}`{group} <{label(group)}>`", shown,
                         escape(primary.comments.get(f"defaults.{group}", ""))))
    return rows


def _rows(found: YamlFile, leaves: dict, prefix: str = "") -> list:
    """One row per key; a mapping whose line carries a comment gets a row of its own before its keys."""
    rows, described = [], set()
    for key, value in leaves.items():
        for parent in _parents(key):
            if found.comments.get(parent) and parent not in described:
                described.add(parent)
                rows.append((code(prefix + parent), "", escape(found.comments[parent])))
        rows.append((code(prefix + key), code(found.raw.get(key, _flow(value))), escape(found.comments.get(key, ""))))
    return rows


def _parents(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _flow(value) -> str:
    """A loaded value as YAML's flow style writes it; a list of mappings only by its length."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"({len(value)} entries)"
    if isinstance(value, list):
        return "[" + ", ".join(map(_flow, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return str(value)
