"""The core's import graph: no cycles, and no project import hidden inside a function.

The layer order itself is pinned by the import-linter ``layers`` contract in
pyproject.toml (run ``lint-imports``); these checks cover what a layer with siblings
allowed to import each other (``a : b``) does not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import napari_unet.core

CORE = Path(napari_unet.core.__file__).parent


def test_the_core_has_no_import_cycles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("napari_unet", exclude_type_checking_imports=True)
    modules = sorted(m for m in graph.modules if m.startswith("napari_unet.core."))
    cycles = [
        (module, other)
        for module in modules
        for other in graph.find_modules_directly_imported_by(module)
        if other.startswith("napari_unet.core.")
        and graph.chain_exists(importer=other, imported=module)
    ]
    assert cycles == []


def _function_level_project_imports(path: Path) -> list[str]:
    """``module:line`` of every napari_unet import inside a function of ``path``."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_unet"):
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                found.append(f"{path.name}:{node.lineno}")
    return found


# export.py loads the sample image (napari_unet._sample_data, outside the core) only
# when it writes a model's example: kept lazy so exporting does not import the sample data.
ALLOWED = {"export.py"}


def test_the_core_imports_its_own_modules_at_module_level():
    found = [
        hit
        for path in sorted(CORE.glob("*.py"))
        if path.name not in ALLOWED
        for hit in _function_level_project_imports(path)
    ]
    assert found == []


def _layered_modules() -> set[str]:
    """The module names the ``layers`` contract of pyproject.toml places."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = CORE.parents[2] / "pyproject.toml"
    if not pyproject.exists():  # an installed wheel carries no pyproject.toml
        pytest.skip("needs the source tree's pyproject.toml")
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}


def test_every_core_module_has_a_place_in_the_layers():
    # A module the contract does not name is not checked by it: a new one must be placed.
    modules = {path.stem for path in CORE.glob("*.py")} - {"__init__"}
    assert sorted(modules - _layered_modules()) == []
