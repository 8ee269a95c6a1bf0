"""Conventions of the source that review alone does not keep (an AST walk over ``kerasq/``): short functions and
modules, and multi-field dataclasses built by keyword (a positional construction silently shifts every field
after one that is added or removed)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kerasq"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
SOURCES = {p.relative_to(ROOT.parent).as_posix(): p.read_text() for p in sorted(ROOT.rglob("*.py"))}
TREES = {path: ast.parse(text, path) for path, text in SOURCES.items()}


def _dataclass_fields() -> dict[str, int]:
    """Name -> number of fields of every dataclass defined in kerasq."""
    fields = {}
    for tree in TREES.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                "dataclass" in ast.unparse(d) for d in node.decorator_list
            ):
                fields[node.name] = sum(isinstance(item, ast.AnnAssign) for item in node.body)
    return fields


def _positional_constructions(tree: ast.Module, multi_field: set[str]) -> list[str]:
    """Calls of a multi-field dataclass by name, or as ``cls(...)`` inside one, with 2+ positional arguments."""
    inside = {
        id(node)
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef) and cls.name in multi_field
        for node in ast.walk(cls)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            by_cls = name == "cls" and id(node) in inside
            if (name in multi_field or by_cls) and len(node.args) >= 2:
                found.append(f"line {node.lineno}: {name}({len(node.args)} positional arguments)")
    return found


@pytest.mark.parametrize("path", sorted(SOURCES))
def test_modules_and_functions_stay_short(path):
    long_functions = [
        f"{node.name} (line {node.lineno}, {node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(TREES[path])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long_functions, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
    lines = SOURCES[path].count("\n")
    assert lines <= MAX_MODULE_LINES, (
        f"{path} has {lines} lines (at most {MAX_MODULE_LINES}): split it by meaning"
    )


@pytest.mark.parametrize("path", sorted(SOURCES))
def test_multi_field_dataclasses_are_built_by_keyword(path):
    multi_field = {name for name, count in _dataclass_fields().items() if count >= 2}
    positional = _positional_constructions(TREES[path], multi_field)
    assert not positional, f"{path}: build these dataclasses by keyword: {positional}"


def test_the_walk_sees_a_positional_construction():
    tree = ast.parse(
        "a = Unit('weights', 'conv', (8, 4))\nb = Unit(kind='weights', name='conv', candidates=(8,))\n"
    )
    assert _positional_constructions(tree, {"Unit"}) == ["line 1: Unit(3 positional arguments)"]
    tree = ast.parse(
        "class Unit:\n    @classmethod\n    def make(cls):\n        return cls('weights', 'conv')\n"
    )
    assert _positional_constructions(tree, {"Unit"}) == ["line 4: cls(2 positional arguments)"]
