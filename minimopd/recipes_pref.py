"""Learning from preferences: the InstructGPT / Llama / Tülu line, on the `notes` domain.

The `notes` domain has no verifier. A hidden gold scorer plays the human labeller
(`tasks/preference.py`). Training sees it only through noisy pairwise labels; evaluation reads
it directly, so every stage is measured on the gold score ("accuracy" in the tables and
histories) next to the reward model's score ("reward", the proxy).

* `demonstrations_artifact` (`sft_notes`): the shared SFT model fine-tuned on notes written the
  way ordinary writers write them (`sample_responses`: mixed quality, gold 0.64 on average),
  InstructGPT's demonstrations. The shared SFT learned the perfect reference notes, which
  leave RLHF nothing to improve; demonstrations as good as their writers do, and the labeller's
  comparisons can then teach what the demonstrations did not show.
* `reward_model_artifact`: the reward model of a profile and seed, grown from that SFT model on
  labelled rankings and normalised on its own samples (`stages/reward_model.py` says what it
  keeps from InstructGPT and what differs); `reward_model_eval`, its held-out accuracy.
* `instructgpt`: SFT -> reward model -> PPO. PPO is the online loop with the `ppo` preset
  (`stages/online.py`: GAE over a value head, per-token KL folded into the reward, clipped
  surrogate and value loss) and a `RewardModelSignal`; the SFT model is its frozen reference.
  A response that runs out of tokens gets reward -1 instead of a score of its cut-off text.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from .artifacts import RecipeResult, fork, online_artifact, sft_artifact, sft_on_pairs, with_parent
from .cache import Artifact, cached_stage, stage_key
from .evaluation import evaluate
from .models import GatedRewardModel, RewardModel
from .profiles import Profile, get_profile
from .signals import RewardModelSignal
from .stages.online import OnlineConfig, preset
from .stages.reward_model import RewardModelConfig, evaluate_reward_model, notes_tokens, train_reward_model
from .stages.sft import SFTConfig
from .tasks import PREFERENCE_DOMAIN, get_task, sample_responses

PPO_KL_BETA = 0.02        # InstructGPT's per-token KL coefficient
PPO_EPOCHS, PPO_MINIBATCHES = 4, 4
PPO_LR_SCALE = 0.2        # PPO's step size as a fraction of the profile's RL learning rate
UNFINISHED_REWARD = -1.0  # a response that never ends (Huang et al. 2024)


def evaluate_notes(art: Artifact, profile: Profile, seed: int):
    """Greedy gold score on held-out notes prompts, per level."""
    return evaluate(art.model, art.tokenizer, tasks=(PREFERENCE_DOMAIN,), profile=profile, seed=seed,
                    max_new_tokens=notes_tokens(profile))


def demonstrations(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (notes prompt, demonstration) pairs: one `sample_responses` note per train prompt."""
    examples = get_task(PREFERENCE_DOMAIN).sample(n, split="train", seed=seed + 17)
    return [(e.prompt, sample_responses(e, 1, seed=seed * 100_003 + i)[0]) for i, e in enumerate(examples)]


def demonstrations_artifact(profile: Profile | str | None = None, *, seed: int = 0, parent: Artifact | None = None,
                            progress: bool = True) -> Artifact:
    """`parent` (default: the profile's SFT model) fine-tuned on mixed-quality notes
    demonstrations for a fifth of the SFT's steps; cached."""
    prof = get_profile(profile)
    parent = parent or sft_artifact(prof, seed=seed, progress=progress)
    cfg = SFTConfig(steps=max(20, prof.sft_steps // 5), batch_size=prof.sft_batch_size, lr=prof.sft_lr,
                    domains=(PREFERENCE_DOMAIN,), seed=seed)
    cfg = replace(cfg, n_examples=cfg.steps * cfg.batch_size)
    return sft_on_pairs(parent, demonstrations(cfg.n_examples, seed), cfg, prof, name="sft_notes", progress=progress)


def reward_model_artifact(profile: Profile | str | None = None, *, seed: int = 0, parent: Artifact | None = None,
                          progress: bool = True, **overrides) -> Artifact:
    """The reward model grown from `parent` (default: the profile's notes SFT model,
    `demonstrations_artifact`) and normalised on its samples, cached. `reward_model_eval` gives
    its held-out accuracy. `criterion="restraint"` trains `llama2`'s safety reward model (its
    own stage, `safety_reward_model`) on the second labeller's comparisons."""
    prof = get_profile(profile)
    parent = parent or demonstrations_artifact(prof, seed=seed, progress=progress)
    cfg = RewardModelConfig.from_profile(prof, seed=seed, **overrides)

    def build():
        res = train_reward_model(RewardModel(fork(parent)), parent.tokenizer, cfg, reference_policy=parent.model,
                                 device=prof.device, progress=progress)
        return res.model, parent.tokenizer, res
    name = "reward_model" if cfg.criterion == "gold" else "safety_reward_model"
    return with_parent(cached_stage(stage_key(name, config=cfg, parent=parent.path.name), build, device=prof.device),
                       parent)


def reward_model_eval(reward_model: Artifact, profile: Profile, seed: int, criterion: str = "gold") -> dict:
    """The reward model's held-out pairwise accuracy, the labels' noise ceiling and its agreement
    with its labeller's hidden score (`stages.reward_model.pairwise_metrics`) on 3 x the profile's
    items per level of test prompts, K responses each, rounded for a table. Evaluation only: not
    part of any key."""
    cfg = RewardModelConfig.from_profile(profile, seed=seed, criterion=criterion)
    ev = evaluate_reward_model(reward_model.model, reward_model.tokenizer, n_prompts=3 * profile.eval_per_level,
                               responses_per_prompt=cfg.responses_per_prompt, temperature=cfg.label_temperature,
                               seed=seed, criterion=criterion)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in ev.items()}


SAFETY_THRESHOLD = -1.0   # `llama2`: below this safety score (in std of the SFT samples' scores) it replaces helpfulness


@dataclass(frozen=True)
class GatedJudge:
    """Llama 2's two reward models where a recipe takes one: `model` is their
    `models.GatedRewardModel` (the safety score below `threshold`, the helpfulness score
    elsewhere), `key` names both and the threshold in the cache keys of what they select or train."""
    helpful: Artifact
    safety: Artifact
    threshold: float = SAFETY_THRESHOLD

    @cached_property
    def model(self) -> GatedRewardModel:
        return GatedRewardModel(self.helpful.model, self.safety.model, self.threshold)

    @property
    def key(self) -> str:
        return f"{self.helpful.path.name}+{self.safety.path.name}<{self.threshold:g}"


def judge_key(judge: Artifact | GatedJudge) -> str:
    """The cache-key name of a reward model artifact or a `GatedJudge`."""
    return judge.key if isinstance(judge, GatedJudge) else judge.path.name


def ppo_config(profile: Profile, seed: int, **overrides) -> OnlineConfig:
    """PPO on notes prompts: the GRPO stages' completions per step, one per prompt (PPO needs no
    groups), InstructGPT's KL coefficient, 4 epochs of 4 minibatches over each batch, half the
    profile's RL steps at a fifth of its RL learning rate.

    The step size and length are measured, not copied (RESULTS.md, "Reward model and PPO"): 16
    updates per batch at the GRPO stages' lr (5e-5 on `cpu`) over-optimised the reward model
    within 10 steps with no gold gain first; at 1e-5 gold rose for 30-35 steps, then stalled
    while the proxy kept climbing."""
    base = OnlineConfig.from_profile(profile, seed=seed, domains=(PREFERENCE_DOMAIN,), difficulty=None,
                                     prompts_per_step=profile.rl_prompts * profile.rl_group_size, group_size=1,
                                     max_new_tokens=notes_tokens(profile), kl_beta=PPO_KL_BETA,
                                     epochs=PPO_EPOCHS, minibatches=PPO_MINIBATCHES,
                                     steps=max(2, profile.rl_steps // 2), lr=profile.rl_lr * PPO_LR_SCALE)
    return replace(preset("ppo", base), **overrides)


def ppo_artifact(parent: Artifact, reward_model: Artifact | GatedJudge, profile: Profile, seed: int, *,
                 name: str = "ppo", progress: bool = True, **overrides) -> Artifact:
    """PPO of `parent` against `reward_model` (an artifact, or Llama 2's `GatedJudge`; cached);
    `overrides` change `ppo_config`'s settings (`kl_beta=0`, `kl_target=6.0`, `steps=...`)."""
    signal = RewardModelSignal(reward_model.model, key=judge_key(reward_model), unfinished_reward=UNFINISHED_REWARD)
    return online_artifact(parent, profile, ppo_config(profile, seed, **overrides), name=name, signal=signal,
                           reference=True, progress=progress)


def windows(history: list[dict], keys=("reward", "accuracy", "kl_ref"), points: int = 10) -> list[dict]:
    """A PPO history as `points` consecutive windows of steps: each window's first and last step
    and the mean of each key over it (the noise of one batch averaged away, the trend kept)."""
    k = max(1, len(history) // points)
    out = []
    for i in range(0, len(history), k):
        part = history[i:i + k]
        out.append({"first": part[0]["step"], "last": part[-1]["step"],
                    **{key: sum(r[key] for r in part) / len(part) for key in keys}})
    return out


def gold_peak(history: list[dict], points: int = 10) -> dict:
    """Where the gold score of a PPO run (`accuracy`, on its own samples) peaked, over `windows`:
    the peak window's gold, proxy and KL, and the last window's, so a table can show whether
    gold peaked and fell while the proxy kept rising (Gao et al.'s over-optimisation)."""
    w = windows(history, points=points)
    best = max(w, key=lambda r: r["accuracy"])
    last = w[-1]
    return {"gold at start": round(w[0]["accuracy"], 3), "gold peak": round(best["accuracy"], 3),
            "peak at steps": f"{best['first']}-{best['last']}", "KL at the peak": round(best["kl_ref"], 3),
            "gold at end": round(last["accuracy"], 3), "proxy at peak": round(best["reward"], 3),
            "proxy at end": round(last["reward"], 3), "KL at end": round(last["kl_ref"], 3)}


def recipe_instructgpt(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """InstructGPT in miniature: SFT -> reward model -> PPO on the `notes` domain.

    SFT here is the shared SFT model fine-tuned on mixed-quality demonstrations
    (`demonstrations_artifact`). Kept from the paper: a reward model trained on K-way rankings with all pairs of a prompt in
    one batch element, normalised on the SFT model's samples; PPO with a value head, GAE,
    whitened advantages, per-token KL to the SFT model folded into the reward (beta 0.02),
    clipped surrogate and value loss. Changed: the labeller is a program; the value head shares
    the policy's backbone (the paper: a separate model initialised from the reward model); no
    pretraining-loss mix (PPO-ptx); the reward model is normalised on the SFT model's samples
    (Ziegler et al. 2019; InstructGPT centred it on the demonstrations); a response that never
    ends gets reward -1.
    """
    result = RecipeResult("instructgpt", profile.name, seed)
    shared = sft_artifact(profile, seed=seed, progress=progress)
    sft = demonstrations_artifact(profile, seed=seed, parent=shared, progress=progress)
    result.record("sft", sft, evaluate_notes(sft, profile, seed))
    rm = reward_model_artifact(profile, seed=seed, parent=sft, progress=progress)
    result.record("reward_model", rm)
    result.tables["reward model: held-out pairwise accuracy"] = [reward_model_eval(rm, profile, seed)]
    ppo = ppo_artifact(sft, rm, profile, seed, progress=progress)
    result.record("ppo", ppo, evaluate_notes(ppo, profile, seed))
    result.tables["proxy and gold reward during PPO"] = [{"stage": "ppo", **gold_peak(ppo.history)}]
    return result


RECIPES = {"instructgpt": recipe_instructgpt}
RECIPE_STAGES = {"instructgpt": ("base", "sft", "sft_notes", "reward_model", "ppo")}
