"""The online loop's settings: `OnlineConfig` in three parts (`SamplingConfig`,
`ObjectiveConfig`, `BudgetConfig`), and `PRESETS`, the lineage's online methods as settings of the
one loop (`stages/online.py` says what each preset changes relative to its paper)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..profiles import Profile, get_profile
from ..tasks import VERIFIABLE_DOMAINS


@dataclass
class SamplingConfig:
    """Which prompts, how many samples, how they are decoded."""
    prompts_per_step: int = 8
    group_size: int = 4                 # G completions per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    domains: tuple[str, ...] = VERIFIABLE_DOMAINS
    difficulty: object = None           # None mixes all levels
    chat: bool = True                   # False: raw-text prompts (R1-Zero on a base model)
    dynamic_sampling: bool = False      # DAPO: drop groups whose rewards are all equal


@dataclass
class ObjectiveConfig:
    """What the update minimises and how it steps."""
    advantage: str = "group"            # an estimator of advantages.ESTIMATORS
    loss: str = "clipped_pg"            # the objective, one of objectives.OBJECTIVES
    aggregation: str = "grpo"           # grpo | dr_grpo | dapo (losses.aggregate)
    eps_low: float = 0.2
    eps_high: float | None = None       # None: symmetric; DAPO's clip-higher uses 0.28
    kl_beta: float = 0.0                # KL(pi || ref) strength; 0 = no reference model (DAPO)
    kl_kind: str = "k3"                 # k3 in the GRPO loss; k1 in PPO's per-token reward
    kl_target: float | None = None      # PPO: adapt kl_beta towards this sequence KL (nats); None: fixed
    kl_horizon: int = 10_000            # PPO's adaptive controller: responses per ~20% change of beta
    outcome_weight: float = 0.0         # teacher_token: + this x group outcome advantage (alpha)
    overlong_buffer: int = 0            # DAPO soft over-long penalty over the last N tokens
    overlong_penalty: float = 1.0
    gamma: float = 1.0                  # GAE discount
    lam: float = 0.95                   # GAE lambda
    whiten_advantages: bool = True      # GAE: whiten over the batch (PPO)
    vf_coef: float = 0.1                # PPO value-loss weight
    vf_clip: float | None = 0.2         # PPO value clipping (None: plain 0.5 MSE)
    topk_tail: bool = True              # reverse_kl over a top-k support: add the tail bucket
    jsd_beta: float = 0.5               # loss="jsd": 1 reverse KL, 0 forward KL, between GKD's JSD
    lr: float = 5e-4
    warmup_steps: int = 0               # linear warm-up, then cosine to lr * min_lr_ratio
    min_lr_ratio: float = 1.0           # 1.0: constant learning rate (the default)
    epochs: int = 1                     # passes over each rollout batch
    minibatches: int = 1                # optimiser steps per pass
    grad_clip: float = 1.0


@dataclass
class BudgetConfig:
    """When to stop, and when to look."""
    steps: int = 10
    flops_budget: float | None = None   # stop once the estimated FLOPs reach this
    max_kl: float = 20.0                # stop with an error when KL to the reference passes this
    eval_every: int = 0


_PARTS = {"sampling": SamplingConfig, "objective": ObjectiveConfig, "budget": BudgetConfig}
# setting -> the objectives that read it (see `cache_dict`)
ONLY_FOR = {"jsd_beta": ("jsd",), "kl_target": ("ppo",), "kl_horizon": ("ppo",)}
ONLY_WITH = {"kl_horizon": "kl_target"}   # setting -> the setting without which it is not read
_OWNER = {f.name: part for part, cls in _PARTS.items() for f in fields(cls)}


@dataclass(init=False)
class OnlineConfig:
    """Settings of `train_online` in three parts (`sampling`, `objective`, `budget`) plus the
    seed. Build it flat, `OnlineConfig(steps=100, group_size=8, lr=1e-4)`, or from parts; read
    any setting flat too (`cfg.group_size` is `cfg.sampling.group_size`), and change settings
    with `dataclasses.replace(cfg, lr=1e-5)`."""
    sampling: SamplingConfig
    objective: ObjectiveConfig
    budget: BudgetConfig
    seed: int = 0

    def __init__(self, sampling: SamplingConfig | None = None, objective: ObjectiveConfig | None = None,
                 budget: BudgetConfig | None = None, seed: int = 0, **settings):
        unknown = sorted(set(settings) - set(_OWNER))
        if unknown:
            raise TypeError(f"OnlineConfig has no setting {unknown[0]!r}; settings: {', '.join(sorted(_OWNER))}")
        given = {"sampling": sampling, "objective": objective, "budget": budget}
        for part, cls in _PARTS.items():
            own = {k: v for k, v in settings.items() if _OWNER[k] == part}
            setattr(self, part, replace(given[part] or cls(), **own))
        self.seed = seed

    def __getattr__(self, name):
        part = _OWNER.get(name)
        if part is None:
            raise AttributeError(f"OnlineConfig has no setting {name!r}")
        return getattr(object.__getattribute__(self, part), name)

    def cache_dict(self) -> dict:
        """The settings as the stage cache keys them: a setting that only one objective reads
        (`ONLY_FOR`), or only alongside another one (`ONLY_WITH`), is left out where it is not
        read, so adding such a setting keeps every other stage's key (and its cached checkpoint)."""
        from dataclasses import asdict
        out = {part: asdict(getattr(self, part)) for part in _PARTS}
        out["seed"] = self.seed
        for name, losses_using in ONLY_FOR.items():
            if self.objective.loss not in losses_using:
                out[_OWNER[name]].pop(name)
        for name, needs in ONLY_WITH.items():
            if getattr(self, needs) is None:
                out[_OWNER[name]].pop(name, None)
        return out

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> "OnlineConfig":
        p = get_profile(profile)
        base = dict(steps=p.rl_steps, prompts_per_step=p.rl_prompts, group_size=p.rl_group_size,
                    max_new_tokens=p.max_new_tokens, lr=p.rl_lr)
        if p.rl_domains:
            base["domains"] = tuple(p.rl_domains)
        if p.rl_difficulty:
            base["difficulty"] = p.rl_difficulty
        return cls(**{**base, **overrides})


PRESETS = {  # the lineage's online methods as settings of one loop (see the module docstring)
    "grpo": dict(advantage="group", aggregation="grpo"),
    "dr_grpo": dict(advantage="group_nostd", aggregation="dr_grpo"),
    "dapo": dict(advantage="group", aggregation="dapo", eps_high=0.28, dynamic_sampling=True,
                 kl_beta=0.0),
    "rloo": dict(advantage="rloo", aggregation="grpo"),
    "ppo": dict(advantage="gae", loss="ppo", aggregation="dapo", kl_kind="k1"),
    "opd_sampled": dict(advantage="teacher_token", loss="clipped_pg", aggregation="dapo"),
    "opd_topk": dict(advantage="none", loss="reverse_kl", aggregation="dapo", topk_tail=True),
    "opd_full": dict(advantage="none", loss="reverse_kl", aggregation="dapo"),
    "opd_jsd": dict(advantage="none", loss="jsd", aggregation="dapo", jsd_beta=0.5),
    "opd_forward": dict(advantage="none", loss="jsd", aggregation="dapo", jsd_beta=0.0),
    "mopd_mimo": dict(advantage="teacher_token", loss="truncated_is", aggregation="grpo"),
}


def preset(name: str, base: OnlineConfig) -> OnlineConfig:
    """`base` with the settings of a named method (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(base, **PRESETS[name])
