"""Shared tiny objects for the unit tests (environment set-up lives in the root conftest.py)."""
import pytest


@pytest.fixture(scope="session")
def tok():
    from minimopd.tokenizer import build_tokenizer
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tok):
    from minimopd.models import build_model
    return build_model("tiny", tok, seed=0).eval()


@pytest.fixture(scope="session")
def sft_tiny(tok):
    """A tiny model fine-tuned to answer a few easy additions (so rewards are not all zero).
    Tests that train it must train a copy (copy.deepcopy)."""
    from minimopd.models import build_model
    from minimopd.stages.sft import SFTConfig, train_sft
    from minimopd.tasks import get_task
    model = build_model("tiny", tok, seed=0)
    pairs = [(e.prompt, e.answer) for e in get_task("add").sample(64, seed=0, difficulty="easy")]
    return train_sft(model, tok, pairs, SFTConfig(steps=60, batch_size=16, lr=3e-3), progress=False).model


class SmokeRun:
    """One recipe's smoke run (seed 0): its `result`, the cache `keys` of the stages it built or
    loaded (in order) and the `warnings` it raised. Shared by every test of that recipe: do not
    modify it."""

    def __init__(self, name: str):
        import warnings

        import minimopd.progress as progress
        from minimopd.recipes import run_recipe
        self.name, self.keys = name, []
        original = progress.stage

        def spy(key):
            if key not in self.keys:
                self.keys.append(key)
            return original(key)

        progress.stage = spy
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.result = run_recipe(name, profile="smoke", seed=0, progress=False)
        finally:
            progress.stage = original
        self.warnings = [str(w.message) for w in caught]


@pytest.fixture(scope="session")
def smoke_run():
    """`smoke_run(name)`: the recipe's `SmokeRun`, run once per test session. Every run of a recipe
    re-evaluates each of its stages, so the golden, bookkeeping and weight-change tests share one."""
    runs: dict[str, SmokeRun] = {}

    def get(name: str) -> SmokeRun:
        if name not in runs:
            runs[name] = SmokeRun(name)
        return runs[name]
    return get
