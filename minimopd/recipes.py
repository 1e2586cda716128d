"""The lineage as runnable recipes: named pipelines composed from stages, with cached prefixes.

    >>> result = run_recipe("sft", profile="smoke")
    >>> print(result.table_text())

A recipe is a function `(profile, seed, progress) -> RecipeResult`; `register_recipe` adds one.
Shared prefixes are trained once: `base_model()` and `sft_model()` go through the stage cache
(`cache.py`), keyed by their configs, so every recipe that starts base -> SFT reuses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .cache import Artifact, cached_stage, stage_key
from .evaluate import EvalResult, evaluate
from .profiles import Profile, get_profile
from .stages.pretrain import PretrainConfig, pretrain
from .stages.sft import SFTConfig, sft_dataset, train_sft
from .tokenizer import build_tokenizer


def base_artifact(profile: Profile | str | None = None, *, seed: int = 0,
                  progress: bool = True, **overrides) -> Artifact:
    """The pretrained base model of a profile (trained on first use, then cached)."""
    prof = get_profile(profile)
    cfg = PretrainConfig.from_profile(prof, seed=seed, **overrides)
    tok = build_tokenizer()

    def build():
        res = pretrain(cfg, tokenizer=tok, device=prof.device, progress=progress)
        return res.model, tok, res
    return cached_stage(stage_key("base", config=cfg), build, device=prof.device)


def base_model(profile: Profile | str | None = None, *, seed: int = 0, progress: bool = True):
    """`(model, tokenizer)`: the cached pretrained base of a profile."""
    art = base_artifact(profile, seed=seed, progress=progress)
    return art.model, art.tokenizer


def sft_artifact(profile: Profile | str | None = None, *, seed: int = 0, reasoning: bool = False,
                 progress: bool = True, **overrides) -> Artifact:
    """The SFT model of a profile: base -> SFT on the tasks' reference answers (cached)."""
    prof = get_profile(profile)
    base = base_artifact(prof, seed=seed, progress=progress)
    cfg = SFTConfig.from_profile(prof, seed=seed, reasoning=reasoning, **overrides)

    def build():
        pairs = sft_dataset(cfg.domains, cfg.n_examples, seed=seed, reasoning=reasoning)
        res = train_sft(base.model, base.tokenizer, pairs, cfg, device=prof.device, progress=progress)
        return res.model, base.tokenizer, res
    return cached_stage(stage_key("sft", config=cfg, parent=base.path.name), build, device=prof.device)


def sft_model(profile: Profile | str | None = None, *, seed: int = 0, reasoning: bool = False,
              progress: bool = True):
    """`(model, tokenizer)`: the cached SFT model of a profile."""
    art = sft_artifact(profile, seed=seed, reasoning=reasoning, progress=progress)
    return art.model, art.tokenizer


@dataclass
class RecipeResult:
    name: str
    profile: str
    seed: int
    models: dict = field(default_factory=dict)       # stage -> model
    evals: dict = field(default_factory=dict)        # stage -> EvalResult
    histories: dict = field(default_factory=dict)    # stage -> list of per-step metrics
    info: dict = field(default_factory=dict)         # stage -> totals (wall_time, cached, ...)

    def table(self) -> list[dict]:
        """One row per evaluated stage: accuracy by difficulty, format rate, length, time."""
        rows = []
        for stage, ev in self.evals.items():
            s = ev.summary()
            row = {"recipe": self.name, "stage": stage}
            row.update({k: round(v, 3) for k, v in s.items() if k.count("/") < 2})
            row["train_s"] = round(self.info.get(stage, {}).get("wall_time", 0.0), 1)
            rows.append(row)
        return rows

    def table_text(self) -> str:
        rows = self.table()
        if not rows:
            return "(no evaluated stages)"
        keys = list(dict.fromkeys(k for r in rows for k in r))
        widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
        lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
        lines += ["  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys) for r in rows]
        return "\n".join(lines)


def _record(result: RecipeResult, stage: str, art: Artifact, ev: EvalResult | None = None):
    result.models[stage] = art.model
    result.histories[stage] = art.history
    result.info[stage] = {**art.info, "cached": art.cached, "path": str(art.path)}
    if ev is not None:
        result.evals[stage] = ev


def recipe_sft(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """base -> SFT (InstructGPT's step 1; the shared prefix of every later recipe)."""
    result = RecipeResult("sft", profile.name, seed)
    base = base_artifact(profile, seed=seed, progress=progress)
    _record(result, "base", base)
    sft = sft_artifact(profile, seed=seed, progress=progress)
    _record(result, "sft", sft, evaluate(sft.model, sft.tokenizer, profile=profile, seed=seed))
    return result


RECIPES: dict[str, Callable[..., RecipeResult]] = {"sft": recipe_sft}


def register_recipe(name: str, fn: Callable[..., RecipeResult], *, overwrite: bool = False):
    if name in RECIPES and not overwrite:
        raise ValueError(f"recipe {name!r} already exists; pass overwrite=True to replace it")
    RECIPES[name] = fn
    return fn


def run_recipe(name: str, profile: Profile | str | None = None, *, seed: int = 0,
               progress: bool = True) -> RecipeResult:
    """Run a named recipe of the lineage (stages already in the cache are reused)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name](get_profile(profile), seed=seed, progress=progress)


# The RLVR / R1 recipes live in their own module and register themselves here.
from . import recipes_rl  # noqa: E402,F401  (import for its side effect)
