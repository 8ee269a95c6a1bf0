"""The package layering the code follows, checked on its imports (an AST walk over ``kerasq/``).

A package may import from its own layer and the layers below; packages of one layer must not import each other
in a cycle; kerasq modules are imported at the top of a module, never inside a function or a ``TYPE_CHECKING``
block (an import placed there to dodge a cycle hides the cycle instead of removing it).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kerasq"

# lowest first; the names are the top-level packages / modules of kerasq ("kerasq" is kerasq/__init__.py)
LAYERS = [
    ("foundations", {"errors", "progress", "config", "data", "layers", "graph", "statistics", "quantizers"}),
    ("plan data model", {"plan"}),
    ("services", {"platform", "params", "hessian"}),
    ("model builder", {"builder"}),
    ("resource accounting and corrections", {"resources", "corrections"}),
    ("mixed precision", {"mixed_precision"}),
    ("report", {"info"}),
    ("pipeline", {"pipeline"}),
    ("workflows", {"ptq", "gptq", "qat", "budget_search", "export", "exporter"}),
    ("entry points", {"core", "cli", "examples", "kerasq"}),
]
LEVEL = {package: level for level, (_, packages) in enumerate(LAYERS) for package in packages}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kerasq"


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("kerasq")]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("kerasq"):
        if (
            node.module == "kerasq"
        ):  # ``from kerasq import ptq``: the names are subpackages or root re-exports
            return [f"kerasq.{alias.name}" for alias in node.names]
        return [node.module]
    return []


def _imports(tree: ast.Module) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line, module) of kerasq imports at module level, and of those nested in a function or an ``if``."""
    top, nested = [], []
    for statement in tree.body:
        for node in ast.walk(statement):
            for module in _imported(node):
                (top if node is statement else nested).append((node.lineno, module))
    return top, nested


SOURCES = {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(ROOT.rglob("*.py"))}


def _package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, tree in SOURCES.items():
        for _, target in _imports(tree)[0]:
            source_package, target_package = _package(module), _package(target)
            if source_package != target_package and target_package in LEVEL:
                edges.setdefault(source_package, set()).add(target_package)
    return edges


def test_every_package_has_a_layer():
    unplaced = sorted({_package(m) for m in SOURCES} - set(LEVEL))
    assert not unplaced, f"place these kerasq packages in tests/test_layering.py LAYERS: {unplaced}"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_imports_go_down_the_layers(module):
    level = LEVEL[_package(module)]
    upward = [
        f"line {line}: {target} ({LAYERS[LEVEL[_package(target)]][0]})"
        for line, target in _imports(SOURCES[module])[0]
        if _package(target) in LEVEL and LEVEL[_package(target)] > level
    ]
    assert not upward, f"{module} ({LAYERS[level][0]}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_lazy_kerasq_imports(module):
    nested = _imports(SOURCES[module])[1]
    assert not nested, f"{module} imports kerasq modules inside a function or an if block: {nested}"


def test_packages_form_no_cycle():
    edges = _package_edges()
    state: dict[str, str] = {}

    def visit(package: str, path: list[str]) -> None:
        state[package] = "open"
        for target in sorted(edges.get(package, ())):
            if state.get(target) == "open":
                raise AssertionError(f"package import cycle: {' -> '.join(path + [package, target])}")
            if target not in state:
                visit(target, path + [package])
        state[package] = "done"

    for package in sorted(edges):
        if package not in state:
            visit(package, [])


def test_the_walk_finds_top_level_and_nested_imports():
    """The walk itself: a module-level import and one inside a function are told apart."""
    tree = ast.parse(
        "from kerasq.pipeline import prepare\n\ndef f():\n    from kerasq.plan import QuantizationPlan\n"
    )
    top, nested = _imports(tree)
    assert top == [(1, "kerasq.pipeline")] and nested == [(4, "kerasq.plan")]
    assert LEVEL[_package("kerasq.pipeline")] > LEVEL[_package("kerasq.params.search")]
