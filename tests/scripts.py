"""Import a script of the repository (experiments/, benchmarks/, tests/data/) as a module, for the
tests that call its functions or its `main`:

    from scripts import load_script
    summarize = load_script("experiments/summarize.py")
"""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    """The file `rel` (relative to the repository root), executed as a module named after its stem."""
    path = ROOT / rel
    if not path.is_file():
        raise FileNotFoundError(f"no script {rel} under {ROOT}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
