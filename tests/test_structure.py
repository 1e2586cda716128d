"""The shape of the package: no import circles, stages never import recipes, the public names
resolve to what they say, and the sampler's edges (a string for a list, library warnings)."""
import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minimopd"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str], *, top_level_only: bool) -> set[str]:
    """minimopd modules that `path` imports (relative imports resolved); with
    `top_level_only`, only the statements that run when the module is imported."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph(top_level_only=True):
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(files), top_level_only=top_level_only) for m, p in files.items()}


def test_no_import_circles():
    graph = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package __init__ importing its own submodules is how a package re-exports: not a circle.
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not cycles, f"import circles: {cycles}"


def test_stages_never_import_recipes():
    graph = _graph(top_level_only=False)
    for module, deps in graph.items():
        if module.startswith("minimopd.stages"):
            bad = {d for d in deps if d.startswith(("minimopd.recipes", "minimopd.artifacts"))}
            assert not bad, f"{module} imports {bad}"


def test_public_evaluate_is_the_function_after_the_recipes_are_imported():
    code = ("import minimopd.recipes, minimopd.evaluation\n"
            "from minimopd import evaluate\n"
            "assert callable(evaluate) and evaluate.__name__ == 'evaluate', evaluate\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generate_refuses_a_string_and_emits_no_library_warnings(tok, tiny_model):
    from minimopd.rollout import generate
    with pytest.raises(TypeError, match="one prompt per character"):
        generate(tiny_model, tok, "What is 2+2?")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(tiny_model, tok, ["What is 2+2?"], num_samples=2, max_new_tokens=4, seed=0)
