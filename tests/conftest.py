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
