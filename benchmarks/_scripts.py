"""scripts/train_builtin.py as a module, for the benchmarks that score as it does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def train_builtin() -> ModuleType:
    """scripts/train_builtin.py, loaded once: its data loading, label cleaning, scale and
    post-processing candidates are the ones the built-in models are trained and scored
    with."""
    name = "train_builtin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]
