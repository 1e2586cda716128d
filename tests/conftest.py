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
