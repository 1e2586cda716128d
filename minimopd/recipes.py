"""The lineage as runnable recipes: named pipelines composed from cached stages.

    >>> result = run_recipe("sft", profile="smoke")
    >>> print(result.table_text())

A recipe is a function `(profile, seed, progress) -> RecipeResult`; `register_recipe` adds one.
The stages recipes are built from (base, SFT, online with any signal, SFT on pairs) live in
`artifacts.py` and go through the stage cache, so recipes that share a prefix train it once.
The preference recipes are in `recipes_pref.py` (InstructGPT) and `recipes_llama.py` (Llama 2,
Llama 3, OLMo 3's delta learning), the RLVR / R1 ones in
`recipes_rl.py`, the distillation ones in `recipes_opd.py`, the 2025-2026 frontier recipes in
`recipes_frontier.py`.
"""
from __future__ import annotations

from typing import Callable

from . import progress as progress_display
from . import recipes_frontier, recipes_llama, recipes_opd, recipes_pref, recipes_progressive, recipes_rl
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


RECIPES: dict[str, Callable[..., RecipeResult]] = {"sft": recipe_sft, **recipes_pref.RECIPES,
                                                   **recipes_llama.RECIPES, **recipes_rl.RECIPES,
                                                   **recipes_opd.RECIPES, **recipes_progressive.RECIPES,
                                                   **recipes_frontier.RECIPES}
# The cached stages each recipe builds, in order (progress shows "stage k/n" and the time left).
RECIPE_STAGES: dict[str, tuple[str, ...]] = {"sft": ("base", "sft"), **recipes_pref.RECIPE_STAGES,
                                             **recipes_llama.RECIPE_STAGES,
                                             **recipes_rl.RECIPE_STAGES,
                                             **recipes_opd.RECIPE_STAGES, **recipes_progressive.RECIPE_STAGES,
                                             **recipes_frontier.RECIPE_STAGES}


# What `minimopd lineage` runs without --recipes. On a GPU (a few minutes per RL stage) and on
# `smoke` that is every recipe. On a laptop CPU every recipe is about 11 hours (RL lifts
# accuracy there only at 300-600 GRPO steps of 3-7 s each), so the `cpu` default is a short tour
# that trains one recipe of each kind from the shipped checkpoints: base -> SFT (shipped, only
# evaluated), Llama 3's reward model -> rejection sampling -> DPO, and one mixed-domain GRPO run
# (Kimi K2.5's). `--recipes all` runs every recipe; tests/test_recipes.py keeps the tour's
# estimate under 20 minutes.
DEFAULT_RECIPES: dict[str, tuple[str, ...]] = {"cpu": ("sft", "llama3", "kimi_k25")}


def default_recipes(profile: Profile | str | None = None) -> list[str]:
    """The recipes `minimopd lineage` runs when none are named: `DEFAULT_RECIPES[profile]`, else
    every registered recipe."""
    name = profile if isinstance(profile, str) else get_profile(profile).name
    return list(DEFAULT_RECIPES.get(name, RECIPES))


def resolve_recipes(names: list[str] | None, profile: Profile | str | None = None) -> list[str]:
    """`--recipes` as given on the command line: None -> the profile's default, ["all"] -> every
    recipe; unknown names are a ValueError that lists the known ones."""
    if not names:
        return default_recipes(profile)
    if "all" in names:
        if len(names) > 1:
            raise ValueError(f"--recipes all runs every recipe; drop the other names ({' '.join(n for n in names if n != 'all')}) "
                             "or list only the recipes you want")
        return list(RECIPES)
    check_known(names, also="all")
    return list(names)


def check_known(names, *, also: str | None = None) -> None:
    """A ValueError naming every recipe of `names` that is not registered and listing the known
    ones (and `also`, another accepted word, when given)."""
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipe(s) {', '.join(map(repr, unknown))}; known recipes: {', '.join(RECIPES)}"
                         + (f" (or {also})" if also else ""))


def register_recipe(name: str, fn: Callable[..., RecipeResult], *, overwrite: bool = False,
                    stages: tuple[str, ...] | None = None):
    """Add a recipe; `stages`: the names of the cached stages it builds, in order (for the
    progress display: "stage k/n" and the time left)."""
    if name in RECIPES and not overwrite:
        raise ValueError(f"recipe {name!r} already exists; pass overwrite=True to replace it")
    if isinstance(stages, (int, str)):
        raise TypeError(f"stages= takes the names of the stages {name!r} builds, in order, e.g. "
                        f"('base', 'sft', 'my_rl'); got {stages!r}")
    RECIPES[name] = fn
    if stages is not None:
        RECIPE_STAGES[name] = tuple(stages)
    return fn


def run_recipe(name: str, profile: Profile | str | None = None, *, seed: int = 0,
               progress: bool = True, position: tuple[int, int] = (1, 1),
               lineage: progress_display.Lineage | None = None) -> RecipeResult:
    """Run a named recipe of the lineage (stages already in the cache are reused).

    With `progress`, each stage shows a bar named after it ("[1/1 tulu3 · stage 3/3] rlvr") and
    leaves a one-line summary when it ends; `position` = (k, n) is this recipe's place in a
    lineage of n recipes, `lineage` its plan (`lineage_plan`: elapsed time and time left)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    ensure_writable()     # before any training, not after the first stage
    with progress_display.recipe(name, *position, stages=RECIPE_STAGES.get(name), enabled=progress,
                                 lineage=lineage):
        return RECIPES[name](get_profile(profile), seed=seed, progress=progress)


def lineage_plan(names: list[str], profile: Profile | str | None = None, *, seed: int = 0,
                 shipped=None) -> progress_display.Lineage:
    """The plan of a lineage run of the recipes `names` with world seed `seed`, for its progress
    display and estimate. `shipped`: the stage names that load from the shipped checkpoints, left
    out of the time estimate (default: those shipped for the profile and seed and in use,
    `shipped.shipped_plan_stages`; `()` counts every stage)."""
    check_known(names)
    prof = get_profile(profile)
    if shipped is None:
        from .shipped import shipped_plan_stages
        shipped = shipped_plan_stages(prof.name, seed)
    recipes = [(n, RECIPE_STAGES.get(n, ())) for n in names]
    planned = {st for _, stages in recipes for st in stages}
    return progress_display.Lineage(prof.name, recipes, shipped=frozenset(planned & set(shipped)))
