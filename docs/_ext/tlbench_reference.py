"""Sphinx extension: the reference pages' generated parts, so they cannot drift from the code and conf/.

docs/reference/*.md call the directives below in MyST fences, e.g. ```{tlbench-config} groups```; each renders the
Markdown that reference_text (plain functions, tested without Sphinx) returns for its argument:
- tlbench-config settings | groups | experiments: conf/config.yaml; every group option; the presets
- tlbench-result-json: result.json field by field (tlbench/records/schema.py)
- tlbench-report sections | metrics: the report's headings (tlbench/report/build.py); its metrics (METRICS.md)
- tlbench-commands: every console script's --help
conf.py loads it with `sys.path.insert(0, os.path.abspath("_ext"))` and `extensions = [..., "tlbench_reference"]`."""

from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from reference_text import commands, config, report, result_json
from sphinx.util.docutils import SphinxDirective

import tlbench
from tlbench.configs import config_dir
from tlbench.records import schema

PACKAGE = Path(tlbench.__file__).resolve().parent

# directive -> {argument: (the Markdown, the files it is read from)}; the argument "" is the directive alone
GENERATED = {
    "tlbench-config": {
        "settings": (config.settings_markdown, lambda: [config_dir() / "config.yaml"]),
        "groups": (config.groups_markdown, lambda: sorted(config_dir().rglob("*.yaml"))),
        "experiments": (config.experiments_markdown, lambda: sorted((config_dir() / config.PRESETS).glob("*.yaml"))),
    },
    "tlbench-result-json": {"": (result_json.result_json_markdown, lambda: [Path(schema.__file__)])},
    "tlbench-report": {
        "sections": (report.sections_markdown, lambda: [PACKAGE / "report" / "build.py"]),
        "metrics": (lambda: report.metrics_path().read_text(encoding="utf-8"), lambda: [report.metrics_path()]),
    },
    "tlbench-commands": {"": (commands.commands_markdown, lambda: [commands.PYPROJECT])},
}


class Generated(SphinxDirective):
    """Parses generated Markdown where the directive stands, on a MyST page. Its headings join the page's sections
    (MyST places them by level, whatever node a nested parse is given), so the text before the first heading is
    parsed into the node holding the directive too (MyST's state keeps it as `inliner.parent`), and the
    directive returns nothing: both stay in source order."""
    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        choices = GENERATED[self.name]
        argument = self.arguments[0] if self.arguments else ""
        if argument not in choices:
            raise self.error(f"{self.name} takes one of: {', '.join(repr(c) for c in choices)}; got {argument!r}")
        markdown, sources = choices[argument]
        for source in sources():
            self.env.note_dependency(str(source))
        lines = StringList(markdown().splitlines(), source=f"<{self.name} {argument}>".replace(" >", ">"))
        self.state.nested_parse(lines, self.content_offset, self.state.inliner.parent, match_titles=True)
        return []


def setup(app) -> dict:
    for name in GENERATED:
        app.add_directive(name, Generated)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
