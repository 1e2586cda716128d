"""The lineage as runnable recipes: named pipelines composed from cached stages.

    >>> result = run_recipe("sft", profile="smoke")
    >>> print(result.table_text())

A recipe is a function `(profile, seed, progress) -> RecipeResult`; `register_recipe` adds one.
The stages recipes are built from (base, SFT, online with any signal, SFT on pairs) live in
`artifacts.py` and go through the stage cache, so recipes that share a prefix train it once.
The RLVR / R1 recipes are in `recipes_rl.py`.
"""
from __future__ import annotations

from typing import Callable

from . import progress as progress_display
from . import recipes_rl
from .cache import ensure_writable
from .artifacts import (Artifact, RecipeResult, base_artifact, base_model, online_artifact,  # noqa: F401
                        sft_artifact, sft_model)
from .evaluation import evaluate
from .profiles import Profile, get_profile


def recipe_sft(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """base -> SFT (InstructGPT's step 1; the shared prefix of every later recipe)."""
    result = RecipeResult("sft", profile.name, seed)
    result.record("base", base_artifact(profile, seed=seed, progress=progress))
    sft = sft_artifact(profile, seed=seed, progress=progress)
    result.record("sft", sft, evaluate(sft.model, sft.tokenizer, profile=profile, seed=seed))
    return result


RECIPES: dict[str, Callable[..., RecipeResult]] = {"sft": recipe_sft, **recipes_rl.RECIPES}
# How many cached stages each recipe builds (progress shows "stage k/n"; a test checks these).
STAGE_COUNTS: dict[str, int] = {"sft": 2, **recipes_rl.STAGE_COUNTS}


def register_recipe(name: str, fn: Callable[..., RecipeResult], *, overwrite: bool = False,
                    stages: int | None = None):
    """Add a recipe; `stages`: how many cached stages it builds (for the progress display)."""
    if name in RECIPES and not overwrite:
        raise ValueError(f"recipe {name!r} already exists; pass overwrite=True to replace it")
    RECIPES[name] = fn
    if stages is not None:
        STAGE_COUNTS[name] = stages
    return fn


def run_recipe(name: str, profile: Profile | str | None = None, *, seed: int = 0,
               progress: bool = True, position: tuple[int, int] = (1, 1),
               started: float | None = None) -> RecipeResult:
    """Run a named recipe of the lineage (stages already in the cache are reused).

    With `progress`, each stage shows a bar named after it ("[1/1 tulu3 · stage 3/3] rlvr") and
    leaves a one-line summary when it ends; `position` = (k, n) is this recipe's place in a
    lineage of n recipes, `started` that lineage's start (`time.perf_counter()`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    ensure_writable()     # before any training, not after the first stage
    with progress_display.recipe(name, *position, stages=STAGE_COUNTS.get(name), enabled=progress,
                                 lineage_started=started):
        return RECIPES[name](get_profile(profile), seed=seed, progress=progress)
