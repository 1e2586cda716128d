"""Starting checkpoints shipped inside the package: `ship` writes them, the stage cache uses them
without training, a damaged one is rebuilt, and the ones in the package are intact and current
with the code that would train them."""
import json
from pathlib import Path

import pytest

from minimopd import cache, shipped
from minimopd.cache import Artifact, load_artifact


def _forbid_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a shipped stage was trained instead of loaded")
    monkeypatch.setattr("minimopd.artifacts.pretrain", no_training)
    monkeypatch.setattr("minimopd.artifacts.train_sft", no_training)
    monkeypatch.setattr("minimopd.recipes_rl.train_sft", no_training)
    monkeypatch.setattr("minimopd.recipes_pref.train_reward_model", no_training)


@pytest.fixture(scope="module")
def smoke_ship(tmp_path_factory):
    """The smoke profile's starting stages shipped into a temporary package folder."""
    dest = tmp_path_factory.mktemp("shipped")
    shipped.ship("smoke", 0, progress=False, dest=dest)
    return dest


def test_ship_writes_every_stage_with_a_manifest(smoke_ship):
    manifest = json.loads((smoke_ship / "manifest.json").read_text())
    assert {e["stage"] for e in manifest.values()} == set(shipped.SHIPPED_STAGES)
    for key, entry in manifest.items():
        art = load_artifact(smoke_ship / key)                  # checksums verified on load
        assert art.history and entry["weights_sha256"] == json.loads(
            (smoke_ship / key / "minimopd.json").read_text())["weights_sha256"]


def test_the_cache_starts_from_shipped_stages_without_training(monkeypatch, tmp_path, smoke_ship):
    monkeypatch.setattr(cache, "SHIPPED_DIR", smoke_ship)
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "fresh"))
    _forbid_training(monkeypatch)
    arts = shipped.stage_artifacts("smoke", 0, progress=False)
    for stage, art in arts.items():
        assert art.info.get("shipped") and art.path.parent == tmp_path / "fresh", stage
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "empty"))
    cache.use_shipped(False)                                    # `minimopd lineage --from-scratch`
    try:
        with pytest.raises(AssertionError, match="trained instead of loaded"):
            shipped.stage_artifacts("smoke", 0, progress=False)
    finally:
        cache.use_shipped(True)
    monkeypatch.setenv("MINIMOPD_SHIPPED", "0")
    with pytest.raises(AssertionError, match="trained instead of loaded"):
        shipped.stage_artifacts("smoke", 0, progress=False)


def test_a_damaged_shipped_checkpoint_is_trained_instead(monkeypatch, tmp_path, smoke_ship):
    import shutil
    damaged = tmp_path / "shipped"
    shutil.copytree(smoke_ship, damaged)
    base_key = next(k for k, e in json.loads((damaged / "manifest.json").read_text()).items()
                    if e["stage"] == "base")
    weights = next((damaged / base_key).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    monkeypatch.setattr(cache, "SHIPPED_DIR", damaged)
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "fresh"))
    from minimopd.artifacts import base_artifact
    with pytest.warns(UserWarning, match="shipped checkpoint .* is unusable"):
        art = base_artifact("smoke", seed=0, progress=False)
    assert not art.info.get("shipped") and not art.cached


# ----------------------------------------------------------------- the checkpoints in the package

MANIFEST = shipped.shipped_manifest()
needs_shipped = pytest.mark.skipif(not MANIFEST, reason="no checkpoints shipped (run `minimopd ship`)")


@needs_shipped
def test_every_shipped_checkpoint_is_intact():
    assert {entry["stage"] for entry in MANIFEST.values()} == set(shipped.SHIPPED_STAGES)
    for key, entry in MANIFEST.items():
        path = cache.SHIPPED_DIR / key
        meta = json.loads((path / "minimopd.json").read_text())
        assert meta["key"] == key and meta["weights_sha256"] == entry["weights_sha256"]
        art = load_artifact(path)
        assert art.history and art.info.get("wall_time", 0) > 0


@needs_shipped
def test_shipped_checkpoints_match_the_current_training_code(monkeypatch):
    """The keys the current code derives for the shipped stages (computed without training)
    are the shipped keys: a change to a config or a task that would retrain them fails here."""
    (profile, seed), = {(e["profile"], e["seed"]) for e in MANIFEST.values()}
    keys = {}

    from minimopd.tokenizer import build_tokenizer
    tokenizer = build_tokenizer()         # the foreign teacher checks that its base shares the vocabulary

    def fake_cached_stage(key, build, *, device="cpu", refresh=False):
        keys[key] = True
        return Artifact(None, tokenizer, [], {}, Path(key), cached=True)
    monkeypatch.setattr("minimopd.artifacts.cached_stage", fake_cached_stage)
    monkeypatch.setattr("minimopd.recipes_rl.cached_stage", fake_cached_stage)
    monkeypatch.setattr("minimopd.recipes_pref.cached_stage", fake_cached_stage)
    computed = {stage: art.path.name for stage, art in shipped.stage_artifacts(profile, seed, progress=False).items()}
    assert computed == {e["stage"]: key for key, e in MANIFEST.items()}, (
        "the shipped checkpoints are stale: a config, a task or the training code changed; rebuild "
        "them with `minimopd ship`")
