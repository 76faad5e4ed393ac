"""The report's sections, read from the code that writes them (tlbench/report/build.py: every `Heading(...)` that
`report_blocks` reaches, in order, with the function and the condition it sits under), and its metrics
(tlbench/report/METRICS.md, the report's one definition of them)."""

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path

from reference_text.markdown import code, escape, table

from tlbench.report import build

ENTRY = "report_blocks"  # the function that lays the report out
METRICS = Path(build.__file__).with_name("METRICS.md")


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    writer: str  # the function holding the Heading
    when: str  # the writer's docstring, or the conditions the Heading sits under; empty when always there


def sections() -> list[Section]:
    tree = ast.parse(inspect.getsource(build))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant)}
    walker = _Walker(functions, constants, _arguments_passed(tree, functions))
    walker.enter(ENTRY, [])
    return walker.found


def sections_markdown() -> str:
    rows = [("↳ " * max(0, s.level - 2) + escape(s.title), str(s.level), code(s.writer), escape(s.when) or "always")
            for s in sections()]
    return "\n\n".join([
        f"The report's headings in the order {code('tlbench/report/build.py')} writes them into report.md and "
        "report.html. A section that depends on the runs is left out when they give it nothing to show.",
        table(("section", "level", "written by", "when"), rows)])


def metrics_path() -> Path:
    return METRICS


class _Walker(ast.NodeVisitor):
    """Source order through `report_blocks`, into every *_blocks function it calls or is handed."""

    def __init__(self, functions: dict, constants: dict, handed: dict):
        self.functions, self.constants, self.handed = functions, constants, handed
        self.found: list[Section] = []
        self.writer, self.conditions = ENTRY, []

    def enter(self, name: str, conditions: list) -> None:
        outer = self.writer, self.conditions
        docstring = ast.get_docstring(self.functions[name]) if name != ENTRY else None
        self.writer, self.conditions = name, [*conditions, *([" ".join(docstring.split())] if docstring else [])]
        for statement in self.functions[name].body:
            self.visit(statement)
        self.writer, self.conditions = outer

    def visit_If(self, node: ast.If) -> None:
        self.conditions.append(f"if {ast.unparse(node.test)}")
        for statement in node.body:
            self.visit(statement)
        self.conditions[-1] = f"unless {ast.unparse(node.test)}"
        for statement in node.orelse:
            self.visit(statement)
        self.conditions.pop()

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name == "Heading":
            self._heading(node)
        elif name in self.functions and name.endswith("_blocks"):
            self.enter(name, self.conditions if self.writer == ENTRY else [])
        else:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if self.writer == ENTRY and node.id in self.handed:
            self.enter(self.handed[node.id], self.conditions)

    def _heading(self, node: ast.Call) -> None:
        title = node.args[0]
        text = title.value if isinstance(title, ast.Constant) else self.constants.get(getattr(title, "id", None))
        level = next((k.value.value for k in node.keywords if k.arg == "level"), 2)
        self.found.append(Section(str(text), level, self.writer, "; ".join(c.rstrip(".") for c in self.conditions)))


def _arguments_passed(tree: ast.Module, functions: dict) -> dict[str, str]:
    """{parameter of report_blocks: the *_blocks function whose result the module's call passes in it}."""
    params = [arg.arg for arg in functions[ENTRY].args.args]
    handed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == ENTRY:
            pairs = [*zip(params, node.args), *((k.arg, k.value) for k in node.keywords)]
            handed.update({param: value.func.id for param, value in pairs
                           if isinstance(value, ast.Call) and getattr(value.func, "id", "").endswith("_blocks")})
    return handed
