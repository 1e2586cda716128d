"""Learning from preferences after InstructGPT: Llama 2's rejection sampling before PPO, Llama 3's
rounds of rejection sampling and DPO, OLMo 3's delta learning. All on the `notes` domain, from
the notes SFT model and its reward model (`recipes_pref`), all measured on the hidden gold score
(Tülu 3's DPO stage, on notes and the verifiable tasks, is `recipes_rl.tulu3_dpo`).

* `rejection_round`: sample K responses per prompt from the current model, keep the one the
  reward model scores highest (`comparisons.best_of_k`), fine-tune the current model on the
  kept ones. Its table row says what the selection bought on the gold scale: the mean gold of
  all samples against that of the kept ones.
* `dpo_round`: DPO of a model on pairs ranked by the reward model from samples
  (`comparisons.ranked_pairs`), the model itself the frozen reference; the course's stand-in for
  the human-labelled comparisons Llama 3 trained DPO on.
* `place`: a model's gold score and KL to its reference on its own samples (T = 1), measured as
  PPO's history logs them, so DPO and rejection-sampling models sit on PPO's gold-against-KL
  curve (`comparisons.drift`).
"""
from __future__ import annotations

import torch

from .artifacts import RecipeResult, base_artifact, dpo_on_pairs, pairs_digest, sft_artifact, sft_on_pairs
from .cache import Artifact
from .comparisons import Scored, best_of_k, delta_pairs, drift, ranked_pairs, sample_scored
from .profiles import Profile
from .recipes_pref import (GatedJudge, demonstrations_artifact, evaluate_notes, gold_peak, judge_key, ppo_artifact,
                           reward_model_artifact, reward_model_eval)
from .stages.dpo import DPOConfig
from .stages.reward_model import notes_tokens
from .stages.sft import SFTConfig, sft_dataset
from .tasks import PREFERENCE_DOMAIN, get_task

SAMPLES = 4            # K responses per prompt, for best-of-K and for ranked pairs
WEAK_FRACTION = 0.1    # the delta-learning weak model: the shared SFT run stopped at this share of its steps


def round_prompts(profile: Profile) -> int:
    """Prompts a round samples: the PPO stage's prompts per step times the profile's RL steps / 40
    (896 on `cpu`: K = 4 samples of each is about 3,600 responses)."""
    return max(16, profile.rl_prompts * profile.rl_group_size * max(1, profile.rl_steps // 40))


def _prompts(profile: Profile, seed: int, purpose: int, n: int | None = None):
    return get_task(PREFERENCE_DOMAIN).sample(n or round_prompts(profile), split="train",
                                              seed=seed * 1009 + 7 * purpose + 3)


def scored_prompts(art: Artifact, rm: Artifact | None, profile: Profile, seed: int, purpose: int,
                   samples: int = SAMPLES):
    """`comparisons.sample_scored`: `art`'s `samples` responses to each of `round_prompts` train
    prompts (a different set for each `purpose`), scored by gold and by `rm` if given."""
    return sample_scored(art.model, art.tokenizer, _prompts(profile, seed, purpose), samples=samples,
                         max_new_tokens=notes_tokens(profile), seed=seed * 1009 + purpose,
                         reward_model=rm.model if rm is not None else None)


def place(art, reference: Artifact, profile: Profile, seed: int) -> dict:
    """`comparisons.drift` of `art` (an `Artifact`, a `StageResult` trained outside the cache as
    Lab 04's, or a model such as a `RecipeResult`'s) against `reference` on 3 x the profile's
    items per level of held-out notes prompts, rounded. Both use `reference`'s tokenizer."""
    examples = get_task(PREFERENCE_DOMAIN).sample(3 * profile.eval_per_level, split="test", seed=seed + 41)
    d = drift(art if isinstance(art, torch.nn.Module) else art.model, reference.model, reference.tokenizer, examples, max_new_tokens=notes_tokens(profile),
              seed=seed)
    return {"gold (T=1)": round(d["gold"], 3), "KL to reference": round(d["kl_ref"], 3),
            "length": round(d["length"], 1), "unfinished": round(d["unfinished"], 3)}


def rejection_round(policy: Artifact, rm: Artifact | GatedJudge, profile: Profile, seed: int, round_: int, *,
                    name: str, scored: Scored | None = None, progress: bool = True) -> tuple[Artifact, dict]:
    """One round of Llama 2's rejection sampling: `policy`'s best-of-K samples by the reward
    model (`scored`, or K samples of `round_prompts` prompts drawn here), then SFT of `policy` on
    them (two epochs, the notes SFT's batch and learning rate; cached under the reward model and
    every kept pair). Returns the new model and the round's row: the gold of all samples and of
    the kept ones, and the sampling cost."""
    scored = scored if scored is not None else scored_prompts(policy, rm, profile, seed, purpose=round_)
    pairs, stats = best_of_k(scored)
    batch = profile.sft_batch_size
    cfg = SFTConfig(steps=max(10, round(2 * len(pairs) / batch)), batch_size=batch, lr=profile.sft_lr,
                    n_examples=len(pairs), domains=(PREFERENCE_DOMAIN,), seed=seed)
    art = sft_on_pairs(policy, pairs, cfg, profile, name=name, progress=progress, reward_model=judge_key(rm),
                       pairs_digest=pairs_digest(pairs))
    return art, {"round": round_, "gold of samples": round(stats["gold_all"], 3),
                 "gold of kept": round(stats["gold_kept"], 3), "kept": stats["kept"],
                 "sampling FLOPs": f"{scored.cost['flops']:.2e}"}


def dpo_round(policy: Artifact, scored: Scored, profile: Profile, seed: int, *, name: str, progress: bool = True,
              **overrides) -> tuple[Artifact, dict]:
    """DPO of `policy` (its own frozen reference) on `scored`'s samples ranked by the reward model
    (best against worst finished response of each prompt). Returns the model and a row on its
    pairs."""
    pairs, stats = ranked_pairs(scored)
    cfg = DPOConfig.from_profile(profile, seed=seed, **overrides)
    return dpo_on_pairs(policy, pairs, cfg, profile, name=name, progress=progress), _pairs_row(stats)


def _pairs_row(stats: dict) -> dict:
    return {"pairs": stats["pairs"], "gold chosen": round(stats["gold_chosen"], 3),
            "gold rejected": round(stats["gold_rejected"], 3), "gold agrees": round(stats["gold_agrees"], 3)}


def weak_sibling_artifact(profile: Profile, seed: int, progress: bool = True, *,
                          fraction: float = WEAK_FRACTION) -> Artifact:
    """The weaker model of delta learning: the shared SFT run stopped at `fraction` of its steps
    (the same data, architecture and schedule; less training), cached."""
    if not 0 < fraction < 1:
        raise ValueError(f"the weak sibling stops the SFT run part-way: fraction must be in (0, 1), got {fraction}")
    base = base_artifact(profile, seed=seed, progress=progress)
    cfg = SFTConfig.from_profile(profile, seed=seed)
    pairs = sft_dataset(cfg.domains, cfg.n_examples, seed=seed)
    return sft_on_pairs(base, pairs, cfg, profile, name="sft_weak", progress=progress,
                        stop_at=max(1, int(cfg.steps * fraction)))


def _start(profile: Profile, seed: int, progress: bool):
    sft = demonstrations_artifact(profile, seed=seed, progress=progress)
    return sft, reward_model_artifact(profile, seed=seed, parent=sft, progress=progress)


def recipe_llama2(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """Llama 2-Chat in miniature: SFT -> two reward models -> two rounds of rejection sampling -> PPO.

    Kept from the paper: two reward models, helpfulness and safety, each trained on its own
    labeller's comparisons, combined by Llama 2's gate (the safety score where it is below a
    threshold, the helpfulness score elsewhere; `models.GatedRewardModel`); rejection sampling
    (best of K samples by that score, then SFT on them) before PPO, each round sampling from the
    latest model; PPO against the gated score with a per-token KL penalty. Changed: the safety
    labeller judges restraint (no gushing, repeats, non-words or rambling:
    `tasks.preference.restraint_score`, the faults the gold scorer punishes) instead of harm, and
    every prompt goes through the gate (Llama 2 also sent prompts tagged unsafe to the safety
    model); the threshold is -1 standard deviation of the SFT samples' safety scores (Llama 2:
    0.15 on a sigmoid scale); K = 4 (Llama 2: up to 10 or more); each round fine-tunes the latest
    model on its own round's samples (Llama 2 kept the best sample of all rounds so far); PPO's
    frozen reference is the model it starts from; 2 rounds (Llama 2: 4 before PPO)."""
    result = RecipeResult("llama2", profile.name, seed)
    sft, rm = _start(profile, seed, progress)
    safety = reward_model_artifact(profile, seed=seed, parent=sft, progress=progress, criterion="restraint")
    judge = GatedJudge(rm, safety)
    result.record("sft", sft, evaluate_notes(sft, profile, seed))
    result.record("reward_model", rm)
    result.record("safety_reward_model", safety)
    result.tables["reward models on held-out labelled pairs"] = [
        {"reward model": name, **reward_model_eval(art, profile, seed, criterion)}
        for name, art, criterion in (("helpfulness (gold)", rm, "gold"), ("safety (restraint)", safety, "restraint"))]
    policy, rows = sft, []
    for r in (1, 2):
        policy, row = rejection_round(policy, judge, profile, seed, r, name=f"rs_round{r}", progress=progress)
        result.record(f"rs_round{r}", policy, evaluate_notes(policy, profile, seed))
        rows.append({**row, "greedy gold after": round(result.evals[f"rs_round{r}"].accuracy(), 3)})
    result.tables["rejection sampling rounds"] = rows
    ppo = ppo_artifact(policy, judge, profile, seed, name="llama2_ppo", progress=progress)
    result.record("ppo", ppo, evaluate_notes(ppo, profile, seed))
    result.tables["proxy and gold reward during PPO"] = [{"stage": "ppo", **gold_peak(ppo.history)}]
    return result


def recipe_llama3(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """Llama 3 in miniature: SFT -> reward model -> two rounds of (sample K -> rejection-sampling
    SFT -> DPO).

    Kept from the paper: each round samples K responses per prompt from the latest model, keeps
    the reward model's best for SFT, and trains DPO on top of that SFT model; the next round
    starts from the DPO model. Changed: the DPO pairs are the same samples' best and worst by the
    reward model (Llama 3's were human comparisons of two responses from different models); one
    reward model trained once (Llama 3 retrained it each round on the new comparisons); K = 4
    (Llama 3: 10-30); no NLL term on the chosen responses and no masking of formatting tokens
    (Llama 3's DPO changes); 2 rounds (Llama 3: 6)."""
    result = RecipeResult("llama3", profile.name, seed)
    sft, rm = _start(profile, seed, progress)
    result.record("sft", sft, evaluate_notes(sft, profile, seed))
    result.record("reward_model", rm)
    policy, rs_rows, dpo_rows = sft, [], []
    for r in (1, 2):
        scored = scored_prompts(policy, rm, profile, seed, purpose=10 + r)
        rs, row = rejection_round(policy, rm, profile, seed, r, name=f"llama3_rs{r}", scored=scored,
                                  progress=progress)
        result.record(f"rs_round{r}", rs, evaluate_notes(rs, profile, seed))
        rs_rows.append({**row, "greedy gold after": round(result.evals[f"rs_round{r}"].accuracy(), 3)})
        dpo, pairs = dpo_round(rs, scored, profile, seed, name=f"llama3_dpo{r}", progress=progress)
        result.record(f"dpo_round{r}", dpo, evaluate_notes(dpo, profile, seed))
        dpo_rows.append({"round": r, **pairs, **place(dpo, rs, profile, seed),
                         "greedy gold": round(result.evals[f"dpo_round{r}"].accuracy(), 3)})
        policy = dpo
    result.tables["rejection sampling rounds"] = rs_rows
    result.tables["DPO rounds: pairs, and the model on its own samples"] = dpo_rows
    return result


def recipe_olmo3_delta(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """OLMo 3's delta learning against reward-ranked DPO, from the same notes SFT model.

    Delta learning (Geng et al. 2025; OLMo 3 Think's DPO): chosen responses from a stronger model
    of one family, rejected from a weaker one, no judge. OLMo 3 took them from Qwen 3 32B and
    0.6B; here the stronger is the shared SFT model (it learned the reference notes) and the
    weaker the same SFT run stopped at a tenth of its steps (`weak_sibling_artifact`). The
    comparison: DPO on the reward model's best-against-worst pairs of the policy's own samples
    (`dpo_round`), same settings and the same number of prompts. Both tables place each model
    on the gold-against-KL plane (`place`)."""
    result = RecipeResult("olmo3_delta", profile.name, seed)
    sft, rm = _start(profile, seed, progress)
    result.record("sft", sft, evaluate_notes(sft, profile, seed))
    result.record("reward_model", rm)
    strong = sft_artifact(profile, seed=seed, progress=progress)
    weak = weak_sibling_artifact(profile, seed, progress)
    result.record("weak_sibling", weak)
    pairs, stats = delta_pairs(scored_prompts(strong, None, profile, seed, 30, samples=1),
                               scored_prompts(weak, None, profile, seed, 30, samples=1))
    cfg = DPOConfig.from_profile(profile, seed=seed)
    delta = dpo_on_pairs(sft, pairs, cfg, profile, name="dpo_delta", progress=progress)
    ranked, ranked_stats = dpo_round(sft, scored_prompts(sft, rm, profile, seed, 31), profile, seed, name="dpo_ranked",
                                     progress=progress)
    rows = []
    for stage, art, row in (("dpo_delta", delta, _pairs_row(stats)), ("dpo_ranked", ranked, ranked_stats)):
        result.record(stage, art, evaluate_notes(art, profile, seed))
        rows.append({"stage": stage, **row, **place(art, sft, profile, seed),
                     "greedy gold": round(result.evals[stage].accuracy(), 3)})
    result.tables["delta pairs vs reward-ranked pairs"] = rows
    return result


RECIPES = {"llama2": recipe_llama2, "llama3": recipe_llama3, "olmo3_delta": recipe_olmo3_delta}
RECIPE_STAGES = {
    "llama2": ("base", "sft", "sft_notes", "reward_model", "safety_reward_model", "rs_round1", "rs_round2",
               "llama2_ppo"),
    "llama3": ("base", "sft", "sft_notes", "reward_model", "llama3_rs1", "llama3_dpo1", "llama3_rs2", "llama3_dpo2"),
    "olmo3_delta": ("base", "sft", "sft_notes", "reward_model", "sft_weak", "dpo_delta", "dpo_ranked"),
}
