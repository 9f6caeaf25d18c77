"""Imports the scripts of benchmarks/ (not a package) as modules for their tests."""

import importlib.util
from pathlib import Path
from types import ModuleType


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    """`benchmarks/<name>.py` as a module named `bench_<name>`."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
