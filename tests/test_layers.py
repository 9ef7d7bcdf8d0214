"""The package's layering (docs/design.md, "Layers"): every module imports only modules of
its own layer or below, and no import circle exists, function-level imports included
(imports under ``if TYPE_CHECKING:`` are annotations only and do not count)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "salad_lightning"


def layers() -> dict[str, int]:
    """Module prefix -> layer, from the table of docs/design.md's "Layers" section."""
    text = (REPO / "docs" / "design.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for line in section.splitlines():
        row = re.match(r"\|\s*(\d+)\s[^|]*\|([^|]*)\|", line)
        if row:
            for name in re.findall(r"`([\w.]+)`", row.group(2)):
                table[f"{PACKAGE}.{name}" if name != PACKAGE else PACKAGE] = int(row.group(1))
    assert table, "docs/design.md has no layer table"
    return table


def layer_of(module: str, table: dict[str, int]) -> int:
    """The layer of the longest prefix of ``module`` in the table (the package's name
    stands for its ``__init__`` alone)."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in table:
            return table[prefix]
    if module == PACKAGE and PACKAGE in table:
        return table[PACKAGE]
    raise AssertionError(f"{module}: no layer in docs/design.md's table")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports at run time."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from package import module` depends on the module, else on what is named
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            names = []
        for name in names:
            if name.startswith(PACKAGE):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in known and name != module:
                    found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def upward(g: dict[str, set[str]], table: dict[str, int]) -> list[str]:
    return [
        f"{m} (layer {layer_of(m, table)}) imports {d} (layer {layer_of(d, table)})"
        for m, deps in g.items()
        for d in sorted(deps)
        if layer_of(d, table) > layer_of(m, table)
    ]


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                walk(dep, [*stack, dep])
        state[node] = 2

    for start in sorted(g):
        if start not in state:
            walk(start, [start])
    return found


def test_every_import_goes_down_or_sideways():
    bad = upward(graph(), layers())
    assert not bad, "imports that run back up:\n" + "\n".join(bad)


def test_no_import_circle():
    found = circles(graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checks_find_a_circle_and_an_upward_import():
    """The two checks are real: on a made-up graph they name the faults, and the real
    graph holds the edges they judge."""
    table = {"p.low": 0, "p.high": 1}
    made_up = {"p.low.a": {"p.high.b"}, "p.high.b": {"p.high.c"}, "p.high.c": {"p.high.b"}}
    assert upward(made_up, table) == ["p.low.a (layer 0) imports p.high.b (layer 1)"]
    assert circles(made_up) == [["p.high.b", "p.high.c", "p.high.b"]]
    g = graph()
    assert "salad_lightning.metrics.functional" in g["salad_lightning.metrics.store"]
    assert "salad_lightning.training.graphs" in g["salad_lightning.training.factory"]
    assert "salad_lightning.training.factory" not in g["salad_lightning.training.step"]
