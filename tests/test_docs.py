"""The documentation's commands still work: every `python -m tlbench ...` / `tlbench ...` command shown in
README.md and docs/**/*.md composes with Hydra (nothing trains), the other console scripts' commands use
flags their parsers have, and README.md stays a page a newcomer reads (at most README_MAX_LINES lines).

What counts as a command: a line of a fenced code block, or an inline code span, that starts with
`python -m tlbench`, `tlbench`, or one of the other entry points (`python -m tlbench.report`,
`tlbench-report`, `... predict`, `... lr_find` / `tlbench-lr-find`, `python -m tlbench.bench`); a `$ `
prompt is dropped, lines ending in `\\` are joined, `# comments` are dropped, and `a && b` / `a; b` are
separate commands. Placeholders, which a reader replaces: a whole word `<anything>` is dropped (it stands
for overrides or a path), inside a word it becomes `placeholder` (`dataset.root=<copy>`); `$PWD` is the
folder the command runs in, `$NAME` / `${NAME}` the value a line `NAME=...` of the same code block gave
it (split into words, as the shell does), else the word NAME; a whole word in brackets (`[overrides]`)
and `...` are dropped. The `mkdir` and `printf` lines of a code block run first,
in a temporary folder, as a reader would (they write the configs its commands then use).

How a `tlbench` command is checked, as Hydra runs it: its overrides compose with Hydra's compose API
against the package's conf/; with `-m`, first the sweep's base config (the overrides without the swept
ones, which is where `freeze.epochs=1` beside a swept `experiment=` fails and `++freeze.epochs=1` does
not), then every combination of the swept values (up to MAX_JOBS of them; a larger sweep is composed for
as many jobs as its longest list, which between them hold every value of every swept key). `-cd DIR`
becomes `hydra.searchpath=[file://DIR]`; `--cfg`, `--info` and their arguments are ignored; any other flag
fails. A command that names a Hydra
plugin (`hydra/launcher=joblib`, `search=optuna`, ...) skips when that plugin is not installed.
"""

import contextlib
import importlib
import io
import itertools
import math
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode

from tlbench.configs import CONFIG_NAME, config_dir
from tlbench.runner.sweep import register_resolvers

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220  # issue 23: "a README of at most ~200 lines"
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "_build" not in p.parts)]
ENTRY_POINTS = {  # the words a command starts with -> the module whose parser takes its arguments
    ("python", "-m", "tlbench"): "tlbench", ("tlbench",): "tlbench",
    ("python", "-m", "tlbench.report"): "tlbench.report.__main__", ("tlbench-report",): "tlbench.report.__main__",
    ("python", "-m", "tlbench.predict"): "tlbench.predict", ("tlbench-predict",): "tlbench.predict",
    ("python", "-m", "tlbench.lr_find"): "tlbench.runner.lr_find", ("tlbench-lr-find",): "tlbench.runner.lr_find",
    ("python", "-m", "tlbench.refit"): "tlbench.runner.refit", ("tlbench-refit",): "tlbench.runner.refit",
    ("python", "-m", "tlbench.soup"): "tlbench.runner.soup", ("tlbench-soup",): "tlbench.runner.soup",
    ("python", "-m", "tlbench.bench"): "tlbench.bench",
}
PLUGINS = {  # an override naming a Hydra plugin's option -> the plugin's package
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=slurm_local": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "search=optuna": "hydra_plugins.hydra_optuna_sweeper",
}
SETUP_WORDS = ("mkdir", "printf")
MAX_JOBS = 16  # a larger sweep is composed job by job for a covering set of its values (combinations)
HYDRA_IGNORED_WITH_VALUE = ("--cfg", "-c", "--info", "-i", "--package", "-p")


@dataclass
class Command:
    where: str                 # file:line, for the test's id and its failure message
    words: list[str]           # after placeholders, without the entry point's own words
    module: str                # which entry point (ENTRY_POINTS)
    setup: list[str] = field(default_factory=list)  # the block's mkdir/printf lines

    def __str__(self):
        return f"{self.where}: {shlex.join(self.words)}"


PLACEHOLDER = "__placeholder__"


def placeholders(text: str, variables: dict[str, str]) -> str:
    """`<...>` -> PLACEHOLDER; `$NAME` -> its value when the block assigned it (`NAME="a=1 b=2"`), else NAME."""
    text = re.sub(r"<[^<>]*>", PLACEHOLDER, text)
    return re.sub(r"\$\{?(?!PWD\b)([A-Za-z_][A-Za-z0-9_]*)\}?",
                  lambda m: variables.get(m.group(1), m.group(1)), text)


def assignment(text: str) -> tuple[str, str] | None:
    """A shell variable set on a line of its own: `COMMON="dataset=digits epochs=3"` -> (COMMON, its value)."""
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(\S.*)?", text)
    if not match:
        return None
    with contextlib.suppress(ValueError):
        return match.group(1), " ".join(shlex.split(match.group(2) or ""))
    return None


def split_commands(line: str) -> list[list[str]]:
    """One shell line -> its commands' words (split at &&, ||, ; and |), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words = [], []
    for word in lexer:
        if word and set(word) <= set(";&|"):
            commands.append(words)
            words = []
        else:
            words.append(word)
    return [c for c in [*commands, words] if c]


def as_command(words: list[str], where: str, setup: list[str]) -> Command | None:
    for start, module in sorted(ENTRY_POINTS.items(), key=lambda kv: -len(kv[0])):
        if tuple(words[:len(start)]) == start:
            rest = [w.replace(PLACEHOLDER, "placeholder") for w in words[len(start):]
                    if w not in ("...", PLACEHOLDER) and not re.fullmatch(r"\[\w[\w ]*\]", w)]
            return Command(where, rest, module, setup)
    return None


def code_lines(path: Path):
    """(line number, text, block number or None for prose) for every line; code lines joined at `\\`."""
    fence, block, pending, start = None, 0, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        opener = re.match(r"(`{3,}|~{3,})(.*)", stripped)
        if fence is None and opener:
            fence, block = opener.group(1), block + 1
            if opener.group(2).strip().startswith("{"):  # a MyST directive (toctree, ...), not code
                fence = "directive:" + fence
            continue
        if fence is not None:
            if stripped.startswith(fence.removeprefix("directive:")) and not stripped.strip("`~"):
                fence = None
            elif not fence.startswith("directive:"):
                start = start if pending else number
                pending += stripped.removeprefix("$ ").removesuffix("\\") + " "
                if not stripped.endswith("\\"):
                    yield start, pending.strip(), block
                    pending = ""
            continue
        for span in re.findall(r"`([^`]+)`", line):
            yield number, span, None


def documented_commands() -> list[Command]:
    commands = []
    for path in PAGES:
        name = path.relative_to(REPO).as_posix()
        setup_by_block: dict[int, list[str]] = {}
        variables: dict[int, dict[str, str]] = {}
        lines = list(code_lines(path))
        for _, text, block in lines:
            if block is not None and text.split()[:1] and text.split()[0] in SETUP_WORDS:
                setup_by_block.setdefault(block, []).append(text)
            if block is not None and assignment(text):
                name, value = assignment(text)
                variables.setdefault(block, {})[name] = placeholders(value, variables.get(block, {}))
        for number, text, block in lines:
            try:
                parts = split_commands(placeholders(text, variables.get(block, {})))
            except ValueError:  # not shell (an unbalanced quote in prose or output)
                continue
            for words in parts:
                command = as_command(words, f"{name}:{number}", setup_by_block.get(block, []))
                if command and (command.words or block is not None):  # an inline bare name is no command
                    commands.append(command)
    return commands


COMMANDS = documented_commands()


def hydra_overrides(command: Command, folder: Path) -> tuple[list[str], bool]:
    """The command's Hydra overrides and whether it is a sweep (-m)."""
    overrides, multirun, words = [], False, iter(command.words)
    for word in words:
        if word in ("-m", "--multirun"):
            multirun = True
        elif word in ("-cd", "--config-dir"):
            overrides.append(f"hydra.searchpath=[file://{(folder / next(words)).resolve()}]")
        elif word.startswith("--config-dir="):
            overrides.append(f"hydra.searchpath=[file://{(folder / word.split('=', 1)[1]).resolve()}]")
        elif word in HYDRA_IGNORED_WITH_VALUE:
            next(words, None)
        elif word.startswith("-"):
            pytest.fail(f"{command}\n{word} is not a flag this test knows for `tlbench`: fix the command "
                        "or teach tests/test_docs.py the flag")
        else:
            overrides.append(word.replace("$PWD", str(folder)))
    return overrides, multirun


def combinations(overrides: list[str]) -> list[list[str]]:
    """The jobs of a sweep: every combination of the swept values, as Hydra's basic sweeper makes them, up to
    MAX_JOBS; a larger sweep is covered by fewer jobs in which every value of every swept key appears."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    if math.prod(len(c) for c in choices) <= MAX_JOBS:
        return [list(job) for job in itertools.product(*choices)]
    return [[c[i % len(c)] for c in choices] for i in range(max(len(c) for c in choices))]


def compose(overrides: list[str], run_mode: RunMode):
    """As `python -m tlbench` composes (the internal entry that takes the run mode; the public
    `hydra.compose` is RUN only, and a sweep's base config is composed in MULTIRUN mode)."""
    return GlobalHydra.instance().hydra.compose_config(CONFIG_NAME, overrides, run_mode=run_mode,
                                                       from_shell=True, with_log_configuration=False)


def check_tlbench(command: Command, folder: Path) -> None:
    overrides, multirun = hydra_overrides(command, folder)
    for option, plugin in PLUGINS.items():
        if option in overrides and importlib.util.find_spec(plugin) is None:
            pytest.skip(f"{option} needs {plugin} (its extra is not installed)")
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        try:
            if multirun:
                compose(overrides, RunMode.MULTIRUN)
            for job in combinations(overrides) if multirun else [overrides]:
                compose(job, RunMode.RUN)
        except Exception as err:  # noqa: BLE001 - any composition error is the documented command's failure
            pytest.fail(f"{command}\ndoes not compose: {type(err).__name__}: {err}")


def help_text(module: str) -> str:
    entry = importlib.import_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        (getattr(entry, "parse_args", None) or entry.main)(["--help"])
    return out.getvalue()


def check_flags(command: Command) -> None:
    known = set(re.findall(r"--?[\w-]+", help_text(command.module)))
    for word in command.words:
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and flag not in known:
            pytest.fail(f"{command}\n{flag} is not an option of {command.module} (its --help lists {sorted(known)})")


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_is_valid(command, tmp_path, monkeypatch):
    """A documented command composes (tlbench, and lr_find's overrides) or uses real flags (the others)."""
    monkeypatch.chdir(tmp_path)
    for line in command.setup:
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
    if command.module == "tlbench":
        check_tlbench(command, tmp_path)
        return
    check_flags(command)
    if command.module == "tlbench.runner.lr_find":  # its positional arguments are overrides
        overrides, words = [], iter(command.words)
        for word in words:
            if word.startswith("-"):
                next(words, None)  # --out DIR, --phase NAME
            else:
                overrides.append(word)
        check_tlbench(Command(command.where, overrides, "tlbench"), tmp_path)

def test_the_commands_are_found():
    """The extraction sees the README's commands and each page's (a parser that found none would pass)."""
    shown = {str(c).split(": ", 1)[1] for c in COMMANDS}
    assert "-m experiment=quickstart pretrained=true,false" in shown
    assert "-m model=resnet18,efficientnet_b0 pretrained=true,false seed=0,1,2" in shown
    assert {c.module for c in COMMANDS} == set(ENTRY_POINTS.values())
    assert len(COMMANDS) > 40


def test_a_broken_command_fails(tmp_path):
    """The check is not vacuous: a misspelt option, a key no config has, and the swept-preset pitfall fail."""
    for words in (["model=resnet181"], ["epochz=3"],
                  ["-m", "experiment=seed_efficientnet_b0_cifar10,seed_efficientnet_b0_cifar10_fixed",
                   "freeze.epochs=1"]):
        with pytest.raises(pytest.fail.Exception, match="does not compose"):
            check_tlbench(Command("planted", words, "tlbench"), tmp_path)
    swept = "experiment=seed_efficientnet_b0_cifar10,seed_efficientnet_b0_cifar10_fixed"
    check_tlbench(Command("planted", ["-m", swept, "++freeze.epochs=1"], "tlbench"), tmp_path)
    with pytest.raises(pytest.fail.Exception, match="is not an option"):
        check_flags(Command("planted", ["run", "cat.jpg", "--topk", "3"], "tlbench.predict"))


def test_readme_stays_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move the detail into a page of docs/ "
        "and link it")


def test_ci_runs_what_readme_says():
    """.ci/run installs with README's set-up line and runs README's test commands and docs build."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = [line.replace("pip install -q ", "pip install ") for line in
          (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    install = re.search(r"(pip install torch\S* .*)$", readme, re.M).group(1)
    assert install in ci, f"README's set-up installs `{install}`; .ci/run must install the same"
    for command in ("python -m pytest -q", "python -m pytest -q -m e2e -n 0"):
        assert f"\n{command}\n" in readme and command in ci
    assert any(line.startswith("sphinx-build -q -W --keep-going -b html docs ") for line in ci)
    assert "sphinx-build -W --keep-going -b html docs " in readme
