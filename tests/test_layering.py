"""The house's layering, read off the source: the twins (what a converted model runs) never import
convert-time code, and the truth (reference.py) never imports what it judges."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tritattn"

#: modules that only convert / revert use: finding producers, probing rewrites, planning
CONVERT_TIME = {"convert", "prologue", "probe", "report", "tune_model"}
#: the modules holding the twins (tritattn/twins.py gathers them)
TWIN_MODULES = ("modules", "split_attention", "global_context")


def _imports(name: str) -> set[str]:
    """tritattn modules that tritattn.<name> imports (relative or absolute, at any depth of its code)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("tritattn."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tritattn."))
    return {m for m in found if (PACKAGE / f"{m}.py").exists()}


def _closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for imported in _imports(todo.pop()) - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


@pytest.mark.parametrize("twins", TWIN_MODULES)
def test_the_twins_never_import_convert_time_code(twins):
    assert _closure(twins) & CONVERT_TIME == set()


def test_the_reference_imports_nothing_it_judges():
    assert _closure("reference") <= {"peers", "layers"}  # timm's layer helpers, mirrored


def test_the_import_reader_sees_a_convert_time_import():
    # the reader itself can fail: convert imports prologue and probe through it
    assert {"prologue", "probe", "report"} <= _closure("convert")
