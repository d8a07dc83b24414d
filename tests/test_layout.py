"""The package's imports run one way: each module imports only from its own layer or the
layers before it, and no modules import each other in a circle (lazy imports inside
functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import latentcat

ROOT = Path(latentcat.__file__).parent

LAYERS = (
    ("errors", "provenance", "blocks", "layout", "compute", "atomic", "lock", "limits"),  # shared names and helpers
    ("gaia",),                  # archive formats -> staging tables; the simulator
    ("features",),              # staging tables -> features
    ("models",),                # features -> latents
    ("encode",),                # new sources through a catalogue's own features and models
    ("analysis",),              # models fitted on latents: classifier, outliers, map, search space
    ("catalog", "config"),      # writing a catalogue (tables, indexes, HATS, add); build configuration
    ("query",),                 # the read-only Catalog
    ("analyse", "build", "plots"),
    ("report", "demo"),
    ("cli", "serve"),           # the command line; the web explorer (only the CLI imports it)
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every latentcat module a file imports, at module level or inside a function."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from latentcat.x import y` may import module x.y
    return {m for m in found if m.startswith("latentcat.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        if name == "latentcat":  # the package's front door (latentcat.open) sits above everything
            continue
        edges[name] = {m for m in imports(path) if m in modules and m != name}
    return edges


def layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_has_a_layer():
    missing = sorted({layer(m) for m in graph()} - set(RANK))
    assert not missing, f"modules outside LAYERS: {missing}"


def test_imports_never_run_up_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if RANK[layer(b)] > RANK[layer(a)])
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_circles():
    edges = graph()
    # a module may import its own package's __init__ (Python does so anyway); that is no circle
    edges = {a: {b for b in targets if not a.startswith(b + ".")} for a, targets in edges.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checks_see_a_real_upward_import(tmp_path):
    """The walker finds lazy imports inside functions, the kind most likely to run upward."""
    bad = tmp_path / "latentcat" / "gaia" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from latentcat.query import catalog\n    from .. import cli\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "latentcat"
    try:
        assert imports(bad) == {"latentcat.query", "latentcat.query.catalog", "latentcat.cli"}
    finally:
        ROOT = saved
