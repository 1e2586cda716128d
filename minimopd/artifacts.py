"""Cached stage outputs, the building blocks every recipe composes: the pretrained base, the
SFT model, an online stage with any signal, SFT on a list of (prompt, response) pairs; and
`RecipeResult`, what a recipe returns.

Shared prefixes are trained once: each builder goes through the stage cache (`cache.py`), keyed
by its config, its parent's key and (for online stages) the signal's spec, so every recipe that
starts base -> SFT reuses them and a teacher run never reuses a verifier run.
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import dataclass, field, replace

from .cache import Artifact, cached_stage, stage_key
from .diagnose import PromptSelection, select_prompts
from .evaluation import EvalResult
from .models import PolicyWithValue, count_parameters, unwrap
from .objectives import OBJECTIVES
from .profiles import Profile, get_profile
from .signals import VerifierSignal
from .stages.online import OnlineConfig, train_online
from .stages.pretrain import PretrainConfig, pretrain
from .stages.dpo import DPOConfig, train_dpo
from .stages.sft import SFTConfig, sft_dataset, train_sft
from .tokenizer import build_tokenizer


def fork(parent: Artifact):
    """A trainable copy of a cached artifact's model. A stage trains this copy, never the
    parent's own model: the parent may be the start of another stage in the same run (GRPO and
    Dr.GRPO from one cold start, OPD modes from one student), and the trainers update in place."""
    return copy.deepcopy(parent.model)


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
        res = train_sft(fork(base), base.tokenizer, pairs, cfg, device=prof.device, progress=progress)
        return res.model, base.tokenizer, res
    return with_parent(cached_stage(stage_key("sft", config=cfg, parent=base.path.name), build, device=prof.device),
                       base)


def sft_model(profile: Profile | str | None = None, *, seed: int = 0, reasoning: bool = False,
              progress: bool = True):
    """`(model, tokenizer)`: the cached SFT model of a profile."""
    art = sft_artifact(profile, seed=seed, reasoning=reasoning, progress=progress)
    return art.model, art.tokenizer


def online_artifact(parent: Artifact, profile: Profile, cfg: OnlineConfig, *, name: str,
                    signal=None, selection: PromptSelection | None = None, reference: bool = False,
                    progress: bool = True) -> Artifact:
    """An online stage on top of a cached parent artifact, itself cached. The parent is also the
    frozen reference model when the stage penalises KL (`kl_beta > 0`) or is asked to track it
    (`reference=True`: `kl_ref` in the history, at no cost to the loss); an objective that trains
    a value head (PPO) gets the parent wrapped in a fresh `PolicyWithValue` unless it has one.
    The key holds the config, the parent, the signal's spec (kind, reward, teachers, mode) and the prompt
    selection, if any: then the parent first samples candidate prompts and RL draws only from
    the learnable ones (`diagnose.select_prompts`; what it kept and cost is in the stage's info,
    and its sampling is counted in the stage's FLOPs and tokens generated). When
    it keeps none (every candidate solved or unreachable: a tiny model, a solved domain), the
    stage says so and draws fresh prompts instead."""
    signal = signal or VerifierSignal()

    def build():
        pool, picked = None, {}
        if selection is not None:
            pool, picked = select_prompts(parent.model, parent.tokenizer, cfg, selection, seed=cfg.seed)
            if not pool:
                warnings.warn(f"{name}: none of the {picked.get('candidates', '?')} candidate prompts is "
                              "learnable (each was solved by all or none of its samples); RL draws fresh "
                              "prompts instead", stacklevel=2)
                pool = None
        model = fork(parent)
        if getattr(OBJECTIVES.get(cfg.loss), "needs_values", False) and not isinstance(model, PolicyWithValue):
            model = PolicyWithValue(model)
        ref = copy.deepcopy(unwrap(parent.model)) if reference or cfg.kl_beta > 0 else None
        res = train_online(model, parent.tokenizer, cfg, signal=signal, prompts=pool, ref_model=ref,
                           device=profile.device, progress=progress)
        res.info.update({f"selection_{k}": v for k, v in picked.items()})
        if picked:
            # the selection is part of the stage's cost: its sampling joins the totals (the
            # history's running figures count the run alone, as do the info's `rl_*` entries)
            res.info.update({f"rl_{k}": res.info[k] for k in ("flops", "tokens_generated", "wall_time")})
            for k in ("flops", "tokens_generated", "wall_time"):
                res.info[k] += picked[k]
        return res.model, parent.tokenizer, res
    key = stage_key(name, config=cfg, signal=signal.spec(), parent=parent.path.name,
                    **({} if selection is None else {"selection": selection}),
                    **({"reference": True} if reference and not cfg.kl_beta > 0 else {}))
    return with_parent(cached_stage(key, build, device=profile.device), parent)


def sft_on_pairs(parent: Artifact, pairs, cfg: SFTConfig, profile: Profile, *, name: str,
                 progress: bool = True, stop_at: int | None = None, **extra) -> Artifact:
    """SFT of `parent` on given (prompt, response) pairs; cached. Records FLOPs = 6 x params x
    trained tokens in its info. `stop_at` = k: that run's checkpoint after k of its steps."""
    if stop_at is not None and stop_at >= cfg.steps:
        stop_at = None                  # the whole run: the same stage (and cache entry) as without it
    if stop_at is not None:
        extra["stop_at"] = stop_at

    def build():
        res = train_sft(fork(parent), parent.tokenizer, pairs, cfg, device=profile.device, progress=progress,
                        stop_at=stop_at)
        res.info["flops"] = 6.0 * count_parameters(res.model) * res.info["tokens"]
        return res.model, parent.tokenizer, res
    key = stage_key(name, config=cfg, parent=parent.path.name, data=sorted(pairs)[:50], n=len(pairs), **extra)
    return with_parent(cached_stage(key, build, device=profile.device), parent)


def with_parent(art: Artifact, parent: Artifact) -> Artifact:
    """`art` with its parent's cache name in `info["parent"]`, set at call time (so stages cached
    before the field existed have it too). Every stage grown from an artifact records its parent
    this way: `report.lineage_rows` follows it to add up compute, `joined` to check the order."""
    art.info.setdefault("parent", parent.path.name)
    return art


def pairs_digest(pairs) -> str:
    """A SHA-256 of a data set of pairs (tuples, or preference dicts with prompt, chosen and
    rejected), in any order: part of the key of a stage trained on data drawn at run time."""
    rows = [(p["prompt"], p["chosen"], p["rejected"]) if isinstance(p, dict) else tuple(p) for p in pairs]
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()


def dpo_on_pairs(parent: Artifact, pairs: list[dict], cfg: DPOConfig, profile: Profile, *, name: str,
                 progress: bool = True, **extra) -> Artifact:
    """DPO of `parent` on preference pairs (dicts with prompt, chosen, rejected), the parent
    itself the frozen reference; cached under the config, the parent and the pairs."""
    def build():
        res = train_dpo(fork(parent), parent.tokenizer, pairs, cfg, reference=parent.model, device=profile.device,
                        progress=progress)
        return res.model, parent.tokenizer, res
    key = stage_key(name, config=cfg, parent=parent.path.name, pairs=pairs_digest(pairs), n=len(pairs), **extra)
    return with_parent(cached_stage(key, build, device=profile.device), parent)


_RUNNING_TOTALS = ("step", "time", "flops", "tokens_generated", "tokens_trained", "ref_tokens", "signal_tokens")


def joined(parts) -> Artifact:
    """Consecutive online stages, each the parent of the next, as one run: the last stage's model,
    the histories end to end with `step` and the running totals (time, FLOPs, tokens) carried
    on from one stage to the next, and the stages' totals summed in `info` (`stages` lists them).
    The cached artifacts themselves are left as they are."""
    parts = list(parts)
    if not parts:
        raise ValueError("joined() needs at least one stage")
    for prev, nxt in zip(parts, parts[1:]):
        if nxt.info.get("parent") != prev.path.name:
            raise ValueError(f"{nxt.path.name} does not continue {prev.path.name} (its parent is "
                             f"{nxt.info.get('parent')!r}): join only consecutive stages")
    history, offset = [], dict.fromkeys(_RUNNING_TOTALS, 0)
    for part in parts:
        history += [{**row, **{k: row[k] + offset[k] for k in _RUNNING_TOTALS if k in row}} for row in part.history]
        if part.history:
            last = part.history[-1]
            offset.update({k: offset[k] + last[k] + (k == "step") for k in _RUNNING_TOTALS if k in last})
    sums = ("wall_time", "steps", *_RUNNING_TOTALS[2:])
    info = {**parts[-1].info, **{k: sum(p.info.get(k, 0) for p in parts) for k in sums},
            "parent": parts[0].info.get("parent"), "stages": [p.path.name for p in parts]}
    return replace(parts[-1], history=history, info=info)


@dataclass
class RecipeResult:
    name: str
    profile: str
    seed: int
    models: dict = field(default_factory=dict)       # stage -> model
    evals: dict = field(default_factory=dict)        # stage -> EvalResult
    histories: dict = field(default_factory=dict)    # stage -> list of per-step metrics
    info: dict = field(default_factory=dict)         # stage -> totals (wall_time, cached, ...)
    tables: dict = field(default_factory=dict)       # title -> rows (dicts): the recipe's own tables

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

    def record(self, stage: str, art: Artifact, ev: EvalResult | None = None) -> None:
        """Add a stage's artifact (and its evaluation) to the result."""
        self.models[stage] = art.model
        self.histories[stage] = art.history
        self.info[stage] = {**art.info, "cached": art.cached, "path": str(art.path)}
        if ev is not None:
            self.evals[stage] = ev
