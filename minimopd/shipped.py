"""Starting checkpoints shipped inside the package, so that a lab or a recipe on the `cpu`
profile starts in seconds instead of after pretraining and SFT.

`minimopd ship --profile cpu --seed 0` trains the stages below from scratch (the same code and
configs as every recipe) and copies them, with their histories and SHA-256 checksums, into
`minimopd/checkpoints/<stage key>/`. The stage cache (`cache.cached_stage`) finds a shipped
artifact by its key, verifies it and copies it into the user's cache; a key that changed (a
config or the training code did) simply finds nothing and the stage is trained. To train
everything from scratch anyway: `minimopd lineage --from-scratch` (or `MINIMOPD_SHIPPED=0`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import cache
from .profiles import get_profile

# The teachers of Labs 07 and 08: the reasoning SFT model trained further on each domain alone.
SHIPPED_SPECIALISTS = ("add", "sort", "reverse", "count")
# Lab 09's foreign teacher: the `count` specialist of the next world (distill.foreign_seed(seed)),
# with the two stages it is grown from (its cache key and its tokenizer check load them).
SHIPPED_FOREIGN = ("foreign_base", "foreign_sft_reasoning", "foreign_specialist_count")
# The preference recipes' shared start (instructgpt, llama2, llama3, olmo3_delta): the SFT model
# fine-tuned on notes demonstrations, and the reward model grown from it.
SHIPPED_PREFERENCE = ("sft_notes", "reward_model")
SHIPPED_STAGES = ("base", "sft", "sft_reasoning", "cold_start", *(f"specialist_{d}" for d in SHIPPED_SPECIALISTS),
                  *SHIPPED_FOREIGN, *SHIPPED_PREFERENCE)


def stage_artifacts(profile, seed: int, *, progress: bool = True) -> dict:
    """The shipped stages of a profile and seed, built (or loaded from the cache) from scratch."""
    from .artifacts import base_artifact, sft_artifact
    from .distill import foreign_seed, specialist_artifact
    from .recipes_pref import demonstrations_artifact, reward_model_artifact
    from .recipes_rl import cold_start_artifact
    profile = get_profile(profile)
    arts = {"base": base_artifact(profile, seed=seed, progress=progress),
            "sft": sft_artifact(profile, seed=seed, progress=progress),
            "sft_reasoning": sft_artifact(profile, seed=seed, reasoning=True, progress=progress),
            "cold_start": cold_start_artifact(profile, seed, progress)}
    for domain in SHIPPED_SPECIALISTS:
        arts[f"specialist_{domain}"] = specialist_artifact(arts["sft_reasoning"], profile, domain, seed=seed,
                                                           progress=progress)
    other = foreign_seed(seed)
    arts["foreign_base"] = base_artifact(profile, seed=other, progress=progress)
    arts["foreign_sft_reasoning"] = sft_artifact(profile, seed=other, reasoning=True, progress=progress)
    arts["foreign_specialist_count"] = specialist_artifact(arts["sft_reasoning"], profile, "count", seed=seed,
                                                           foreign=True, progress=progress)
    arts["sft_notes"] = demonstrations_artifact(profile, seed=seed, parent=arts["sft"], progress=progress)
    arts["reward_model"] = reward_model_artifact(profile, seed=seed, parent=arts["sft_notes"], progress=progress)
    return arts


def ship(profile="cpu", seed: int = 0, *, progress: bool = True, dest: Path | None = None) -> Path:
    """Train (or reuse from the cache) the starting stages and write them to `dest` (default: the
    package's checkpoints folder), replacing what was there. Returns the folder."""
    prof = get_profile(profile)
    dest = Path(dest or cache.SHIPPED_DIR)
    before = cache._use_shipped
    cache.use_shipped(False)
    try:
        arts = stage_artifacts(prof, seed, progress=progress)
    finally:
        cache.use_shipped(before)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    manifest = {}
    for stage, art in arts.items():
        shutil.copytree(art.path, dest / art.path.name)
        record = dest / art.path.name / "minimopd.json"
        meta = json.loads(record.read_text())
        if "files_sha256" not in meta:       # a stage cached before the full seal: ship it sealed
            meta = cache.seal({k: v for k, v in meta.items() if k != "record_sha256"}, dest / art.path.name)
            record.write_text(json.dumps(meta))
        manifest[art.path.name] = {"stage": stage, "profile": prof.name, "seed": seed,
                                   "weights_sha256": meta["weights_sha256"]}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return dest


def shipped_manifest() -> dict:
    """{key: {stage, profile, seed, weights_sha256}} of the shipped checkpoints ({} if none)."""
    path = cache.SHIPPED_DIR / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def shipped_plan_stages(profile: str, seed: int) -> set[str]:
    """The stages of `recipes.RECIPE_STAGES` (names as there: `sft:reasoning`) that load from the
    shipped checkpoints for `profile` and `seed`, none when they are not in use: a lineage's time
    estimate leaves them out. The foreign teacher's stages (`foreign_*`) are the next world's own
    (`distill.foreign_seed`), so they count for that seed."""
    if not cache.shipped_in_use():
        return set()
    from .distill import foreign_seed
    names, out = {"sft_reasoning": "sft:reasoning"}, set()
    for e in shipped_manifest().values():
        stage, world = e["stage"], e.get("seed")
        if stage.startswith("foreign_"):
            stage, world = stage[len("foreign_"):], foreign_seed(world)
        if e.get("profile") == profile and world == seed:
            out.add(names.get(stage, stage))
    return out
