"""Compute profiles: how big the models are and how long each stage trains.

- `smoke`: CI. Seconds per stage; proves the code paths run end to end, claims nothing.
- `cpu`:   a laptop. Minutes per SFT stage, tens of minutes per 300-step RL stage on 2 cores (a
           few minutes on a GPU); the course's quality claims are measured with these settings.
- `gpu`:   one CUDA GPU. Larger models and longer runs; tighter claims.

`MINIMOPD_PROFILE` selects one; without it the default is `gpu` when CUDA is available, else
`cpu`. Stage configs are derived from the profile (`SFTConfig.from_profile(p)`), so one switch
changes a whole recipe, and a user can still override any field by hand.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

PROFILE_ENV = "MINIMOPD_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str
    model_size: str              # a key of models.MODEL_SIZES
    small_model_size: str        # the "small student" of distillation experiments
    device: str
    # pretraining on the built-in corpus
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_seq_len: int
    pretrain_lr: float
    corpus_lines: int            # distinct raw-text lines generated for pretraining
    # supervised fine-tuning
    sft_steps: int
    sft_batch_size: int
    sft_lr: float
    sft_examples: int
    # online RL / distillation (stages/online.py)
    rl_steps: int
    rl_prompts: int              # prompts per step
    rl_group_size: int           # samples per prompt
    rl_lr: float
    # evaluation
    eval_per_level: int          # test items per (domain, difficulty)
    max_new_tokens: int
    eval_batch_size: int
    # which prompts the RL stages draw (empty / None: every verifiable domain, every level). The
    # smoke profile's seconds-old models earn rewards only on `count` easy (a one-digit answer),
    # so its RL stages train there and CI exercises real updates (8 samples per prompt: the smoke
    # base writes R1-Zero's tagged format in ~3% of samples, so 4 per prompt often saw none).
    rl_domains: tuple = ()
    rl_difficulty: str | None = None
    # share of pretraining lines written as tagged traces: the smoke base is too small to pick
    # up the format from 5% of 2,000 lines, and its R1-Zero stage needs some formatted samples
    pretrain_tagged_fraction: float = 0.05

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (e.g. `get_profile("cpu").replace(sft_steps=50)`)."""
        return dataclasses.replace(self, **changes)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


_PROFILES = {
    "smoke": dict(model_size="tiny", small_model_size="tiny",
                  pretrain_steps=400, pretrain_batch_size=8, pretrain_seq_len=128, pretrain_lr=3e-3,
                  corpus_lines=2000,
                  sft_steps=150, sft_batch_size=8, sft_lr=2e-3, sft_examples=400,
                  rl_steps=3, rl_prompts=4, rl_group_size=8, rl_lr=1e-4,
                  eval_per_level=4, max_new_tokens=24, eval_batch_size=64,
                  rl_domains=("count",), rl_difficulty="easy", pretrain_tagged_fraction=0.5),
    "cpu": dict(model_size="small", small_model_size="mini",
                pretrain_steps=1200, pretrain_batch_size=32, pretrain_seq_len=128, pretrain_lr=2e-3,
                corpus_lines=120_000,
                sft_steps=1000, sft_batch_size=64, sft_lr=2e-3, sft_examples=40_000,
                # RL: measured on the v3 world (RESULTS.md): GRPO at 5e-5 for 300 steps lifts held-out
                # hard accuracy on three seeds; 1e-4 damages easy items, 100 steps give half the gain
                rl_steps=300, rl_prompts=16, rl_group_size=8, rl_lr=5e-5,
                eval_per_level=100, max_new_tokens=32, eval_batch_size=300),
    "gpu": dict(model_size="base", small_model_size="small",
                pretrain_steps=6000, pretrain_batch_size=128, pretrain_seq_len=256, pretrain_lr=1e-3,
                corpus_lines=1_000_000,
                sft_steps=1500, sft_batch_size=64, sft_lr=5e-4, sft_examples=60_000,
                rl_steps=300, rl_prompts=64, rl_group_size=8, rl_lr=2e-5,
                eval_per_level=300, max_new_tokens=32, eval_batch_size=1000),
}
PROFILE_NAMES = tuple(_PROFILES)


def get_profile(name: str | Profile | None = None, *, device: str | None = None) -> Profile:
    """The named profile (or `$MINIMOPD_PROFILE`, or the machine's default)."""
    if isinstance(name, Profile):
        return name
    if name is None:
        name = os.environ.get(PROFILE_ENV) or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(_PROFILES)} "
                         f"(set {PROFILE_ENV} or pass profile=...)")
    if device is None:
        device = default_device()
    if name == "gpu" and device == "cpu":
        # Allowed (e.g. to inspect configs), but say so: it will be very slow.
        import warnings
        warnings.warn("the gpu profile on a CPU will be slow; use MINIMOPD_PROFILE=cpu", stacklevel=2)
    return Profile(name=name, device=device, **_PROFILES[name])
