"""RLVR and DeepSeek-R1 recipes: `tulu3`, `grpo_vs_drgrpo`, `r1_zero`, `r1` (with distillation
into a smaller model vs RL on it at matched compute), collected in `RECIPES` (which
`recipes.RECIPES` includes).

Each recipe reuses the cached base / SFT prefixes and caches its own stages, so the lineage can
be re-run cheaply and a lab can pick up any intermediate model.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

from .artifacts import (RecipeResult, base_artifact, dpo_on_pairs, fork, online_artifact, sft_artifact, sft_on_pairs,
                        with_parent)
from .cache import Artifact, cached_stage, stage_key
from .comparisons import judged_pairs, sample_scored
from .diagnose import PromptSelection
from .evaluation import evaluate
from .models import count_parameters
from .profiles import Profile
from .recipes_llama import SAMPLES, place, round_prompts, scored_prompts
from .recipes_pref import evaluate_notes
from .rewards import r1_reward, rejection_filter
from .rollout import generate
from .signals import VerifierSignal
from .stages.dpo import DPOConfig
from .stages.online import OnlineConfig, preset
from .stages.sft import SFTConfig, sft_dataset, train_sft
from .tasks import DIFFICULTIES, VERIFIABLE_DOMAINS, get_task

REASONING_TOKENS = 4   # reasoning runs get this many times the profile's answer budget
TULU3_BETA = 5.0       # Tülu 3's beta for its length-normalised DPO


def verifier(reward: str = "accuracy") -> VerifierSignal:
    """The rule rewards of the RL recipes by name: the task's accuracy, R1's accuracy + 0.5 x
    format, and R1's reasoning-stage reward with answer consistency."""
    rewards = {"accuracy": None, "r1": r1_reward(0.5), "r1_consistency": r1_reward(0.5, 0.25)}
    return VerifierSignal(rewards[reward])


def reasoning_config(profile: Profile, **overrides) -> OnlineConfig:
    return OnlineConfig.from_profile(profile, max_new_tokens=profile.max_new_tokens * REASONING_TOKENS,
                                     **overrides)


def rl_selection(profile: Profile, steps: int | None = None) -> PromptSelection:
    """The prompt selection of the RLVR stages: as many candidate prompts as the run draws (at
    least 64; `steps` for a run shorter or longer than the profile's `rl_steps`, such as each of
    glm5's four staged runs), each sampled 8 times; only the learnable ones (0 < pass rate < 1)
    go into RL, so the run sees each kept prompt two or three times (measured on the v3 world:
    30-52% kept, a lift on held-out items on three seeds at lr 5e-5). A small pool cycled many
    times at a high learning rate is memorised instead (v2: a 243-prompt pool drawn 6.6 times at
    lr 2e-4 raised the training reward 0.45 -> 0.69 while held-out accuracy fell; RESULTS.md)."""
    return PromptSelection(candidates=max(64, (steps or profile.rl_steps) * profile.rl_prompts), samples=8)


def tulu3_dpo(sft: Artifact, profile: Profile, seed: int, progress: bool = True, **overrides) -> tuple[Artifact, dict]:
    """Tülu 3's DPO stage on `sft` (between its SFT and its RLVR), cached as `tulu3_dpo`.

    Kept from the paper: prompts from the SFT mix; on-policy responses of `sft` pooled with
    off-policy ones; a judge rates the candidates and the best-rated is chosen against a random
    lower-rated one (`comparisons.judged_pairs`); length-normalised DPO
    (`DPOConfig.length_normalize`) at beta = 5 (`TULU3_BETA`); the SFT model as the frozen
    reference. In miniature: `round_prompts` notes prompts, one sample of `sft` each against
    `SAMPLES` - 1 notes of other models, judged by the course's simulated labeller (noisy pairwise
    comparisons by the hidden gold score); and as many verifiable prompts, `SAMPLES` samples of
    `sft` each (worked traces), judged by the verifier (a right answer against a wrong one).
    Changed: the judges (Tülu 3: GPT-4o on four aspects; the notes gold the tables report is the
    labeller's own scale, as Tülu 3's AlpacaEval is an LLM judge's); no off-policy responses on
    the verifiable prompts; 4 candidates per prompt (Tülu 3: 4 of 22 models).
    Returns the model and a row: the pairs of each kind, their on-policy shares, and the model
    on the notes gold-against-KL plane (`place`). `overrides` go to `DPOConfig` (probes)."""
    notes, notes_stats = judged_pairs(scored_prompts(sft, None, profile, seed, purpose=40, samples=1),
                                      off_policy=SAMPLES - 1, seed=seed)
    per_domain = max(4, round_prompts(profile) // len(VERIFIABLE_DOMAINS))
    tasks = [ex for d in VERIFIABLE_DOMAINS for ex in get_task(d).sample(per_domain, split="train", seed=seed * 1009 + 41)]
    traces = sample_scored(sft.model, sft.tokenizer, tasks, samples=SAMPLES, seed=seed * 1009 + 41,
                           max_new_tokens=profile.max_new_tokens * REASONING_TOKENS)
    verified, _ = judged_pairs(traces, judge="verifier", off_policy=0, seed=seed)
    cfg = DPOConfig.from_profile(profile, seed=seed, **{"beta": TULU3_BETA, "length_normalize": True, **overrides})
    art = dpo_on_pairs(sft, notes + verified, cfg, profile, name="tulu3_dpo", progress=progress)
    return art, {"notes pairs": len(notes), "verifiable pairs": len(verified),
                 "notes gold chosen / rejected": f"{notes_stats['gold_chosen']:.3f} / {notes_stats['gold_rejected']:.3f}",
                 "notes chosen on-policy": round(notes_stats["chosen_on_policy"], 3),
                 "verifiable prompts with a pair": round(len(verified) / max(1, len(tasks)), 3),
                 **place(art, sft, profile, seed)}


def recipe_tulu3(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """Tülu 3 in miniature: SFT -> DPO -> RLVR (GRPO with the verifier reward).

    Tülu 3's SFT mix teaches chain-of-thought answers before RLVR rewards the final answer; ours
    is the SFT on worked traces (`reasoning=True`, with the notes domain in the mix). DPO then
    trains on judged preference pairs, notes (on-policy against off-policy responses, rated by
    the labeller) and worked traces (a right one against a wrong one, by the verifier), with
    Tülu 3's length-normalised loss (`tulu3_dpo`). RLVR starts from the DPO model and
    draws only prompts it solves in some but not all of 8 samples (`rl_selection`): the others
    give every sample of a group the same reward, hence no gradient (DAPO's dynamic sampling
    drops such groups after sampling them; selecting first spends the sampling once). On the
    RL algorithm: Tülu 3 used PPO with a value model; here it is GRPO (its later OLMo recipes
    switched to GRPO too).

    The evaluations are the verifiable domains (what RLVR trains); the table "notes and
    verifiable accuracy per stage" adds each stage's greedy gold score on notes (what DPO
    trains), and "DPO pairs" the preference data and where DPO put the model."""
    result = RecipeResult("tulu3", profile.name, seed)
    ev = lambda art: evaluate(art.model, art.tokenizer, profile=profile, seed=seed, reasoning=True)
    sft = sft_artifact(profile, seed=seed, reasoning=True, progress=progress)
    result.record("sft", sft, ev(sft))
    dpo, pairs_row = tulu3_dpo(sft, profile, seed, progress=progress)
    result.record("dpo", dpo, ev(dpo))
    cfg = preset("grpo", reasoning_config(profile, seed=seed))
    rl = online_artifact(dpo, profile, cfg, name="rlvr", signal=verifier(), selection=rl_selection(profile),
                         progress=progress)
    result.record("rlvr", rl, ev(rl))
    result.tables["DPO pairs"] = [pairs_row]
    result.tables["notes and verifiable accuracy per stage"] = [
        {"stage": stage, "notes gold (greedy)": round(evaluate_notes(art, profile, seed).accuracy(), 3),
         "verifiable accuracy": round(result.evals[stage].accuracy(), 3)}
        for stage, art in (("sft", sft), ("dpo", dpo), ("rlvr", rl))]
    return result


def recipe_grpo_vs_drgrpo(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """GRPO vs Dr.GRPO from the same reasoning (cold-start SFT) model, same data and budget.

    GRPO divides each sequence's loss by its own length, so a long *wrong* answer is penalised
    less per token than a short one, and wrong answers drift longer; Dr.GRPO's constant
    normaliser (and no std scaling) removes that bias. Watch `length_wrong` in both histories."""
    result = RecipeResult("grpo_vs_drgrpo", profile.name, seed)
    for algo in ("grpo", "dr_grpo"):
        art = grpo_vs_drgrpo_arm(profile, seed, algo, progress)
        result.record(algo, art, evaluate(art.model, art.tokenizer, profile=profile, seed=seed,
                                          reasoning=True))
    return result


def grpo_vs_drgrpo_arm(profile: Profile, seed: int, algo: str, progress: bool = True):
    """One arm of `grpo_vs_drgrpo` (`algo` "grpo" or "dr_grpo") from the seed's cold start,
    cached. The arms are independent, so a device run trains them in separate processes
    (`experiments/device/stage.py`) and the recipe then finds both in the cache."""
    cold = cold_start_artifact(profile, seed, progress)
    cfg = preset(algo, reasoning_config(profile, seed=seed))
    return online_artifact(cold, profile, cfg, name=algo, signal=verifier("r1"), progress=progress)


def recipe_r1_zero(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """R1-Zero: GRPO straight from the pretrained base (no SFT) with rule rewards for accuracy
    and the `<think>..</think><answer>..</answer>` format.

    Like R1-Zero, the base gets a plain-text template rather than a chat format it never saw:
    the bare question (`chat=False`). In its raw corpus a few percent of lines are questions
    followed by tagged traces, so the base sometimes answers in the format and often does not;
    RL has to make it reliable. (In the chat format the base never produces the tags at all and
    RL gets no signal to start from: RL amplifies what the base can already do.)"""
    result = RecipeResult("r1_zero", profile.name, seed)
    base = base_artifact(profile, seed=seed, progress=progress)
    ev = lambda art: evaluate(art.model, art.tokenizer, profile=profile, seed=seed, reasoning=True,
                              chat=False)
    result.record("base", base, ev(base))
    rl = r1_zero_stage(base, profile, seed, progress)
    result.record("r1_zero", rl, ev(rl))
    return result


def r1_zero_stage(base, profile: Profile, seed: int, progress: bool = True, *,
                  selection: PromptSelection | None = None):
    """R1-Zero's RL stage from `base` (cached): GRPO for 2 x rl_steps on raw-text prompts with
    R1's reward, optionally on `selection`'s learnable prompts only
    (`experiments/r1_zero_probe.py` tries that and other bases)."""
    cfg = preset("grpo", reasoning_config(profile, seed=seed, steps=profile.rl_steps * 2, chat=False))
    return online_artifact(base, profile, cfg, name="r1_zero", signal=verifier("r1"), selection=selection,
                           progress=progress)


def cold_start_config(profile: Profile, seed: int) -> SFTConfig:
    """R1's cold start: a *small* set of readable worked solutions (a tenth of the SFT mix),
    trained for half the SFT steps."""
    return SFTConfig.from_profile(profile, seed=seed, reasoning=True, domains=VERIFIABLE_DOMAINS,
                                  n_examples=max(40, profile.sft_examples // 10),
                                  steps=max(10, profile.sft_steps // 2))


def cold_start_artifact(profile: Profile, seed: int, progress: bool, *, model_size: str | None = None):
    """R1's cold start: SFT of the base on a small set of readable worked solutions."""
    base = (base_artifact(profile, seed=seed, progress=progress) if model_size is None else
            base_artifact(profile, seed=seed, progress=progress, model_size=model_size))
    cfg = cold_start_config(profile, seed)

    def build():
        pairs = sft_dataset(cfg.domains, cfg.n_examples, seed=seed, reasoning=True)
        res = train_sft(fork(base), base.tokenizer, pairs, cfg, device=profile.device, progress=progress)
        return res.model, base.tokenizer, res
    return with_parent(cached_stage(stage_key("cold_start", config=cfg, parent=base.path.name), build,
                                    device=profile.device), base)


# Rejection sampling draws as many prompts per level and spends more samples where the model
# is less often right, so the kept set is not mostly easy items (v3, seed 0: 4 samples on every
# prompt kept 1,103 traces, mostly easy, and the SFT on them lost medium accuracy; RESULTS.md).
REJECTION_SAMPLES = {"easy": 2, "medium": 4, "hard": 8}


def rejection_prompts(profile: Profile) -> int:
    """Prompts rejection sampling draws: twice the cold start's examples, so that the kept set
    (about half of them) is at least as large as the cold-start set it follows (R1's rejection
    round is ~100x its cold start; ours must at least not be smaller)."""
    return 2 * cold_start_config(profile, 0).n_examples


def sample_traces(art, profile: Profile, *, n_prompts: int, seed: int, samples=None,
                  domains=VERIFIABLE_DOMAINS):
    """Rejection sampling: `n_prompts` train prompts spread over `domains` and levels, sampled
    `samples[level]` times each (default `REJECTION_SAMPLES`); keep one correct, well-formed
    completion per prompt.

    Returns `(pairs, stats)`; stats count the prompts and kept traces per level and the tokens
    and FLOPs the sampling cost."""
    samples = dict(REJECTION_SAMPLES if samples is None else samples)
    pairs, generated, forward = [], 0, 0
    kept = {level: 0 for level in DIFFICULTIES}
    per_cell = max(1, n_prompts // (len(domains) * len(DIFFICULTIES)))
    for d, name in enumerate(domains):
        task = get_task(name)
        for v, level in enumerate(DIFFICULTIES):
            examples = task.sample(per_cell, split="train", seed=seed * 977 + 500 + 10 * d + v, difficulty=level)
            for i in range(0, len(examples), 128):
                chunk = examples[i:i + 128]
                ro = generate(art.model, art.tokenizer, [e.prompt for e in chunk], num_samples=samples[level],
                              max_new_tokens=profile.max_new_tokens * REASONING_TOKENS, temperature=1.0,
                              seed=seed + i + 1000 * d + 100 * v)
                rows = [e for e in chunk for _ in range(samples[level])]
                scores = [task.score(e, t) for e, t in zip(rows, ro.texts)]
                got = rejection_filter(rows, ro.texts, scores, per_prompt=1, require_format=True)
                kept[level] += len(got)
                pairs += got
                generated += int(ro.completion_mask.sum())
                forward += int(ro.attention_mask.sum())
    flops = 2.0 * count_parameters(art.model) * forward
    return pairs, {"prompts": per_cell * len(domains) * len(DIFFICULTIES), "kept": len(pairs),
                   "kept_per_level": kept, "samples_per_level": samples,
                   "tokens_generated": generated, "flops": flops}


def sft_on_traces(parent, pairs, profile: Profile, seed: int, name: str, progress: bool, *,
                  epochs_scale: float = 1.0, **extra):
    """SFT of `parent` on (prompt, trace) pairs, for as many epochs as the cold start trains on
    its set (a fixed step count on a smaller set would overfit it), times `epochs_scale` (a
    light warm-up: < 1); cached. FLOPs = 6 x params x trained tokens."""
    cold = cold_start_config(profile, seed)
    epochs = cold.steps * cold.batch_size / cold.n_examples * epochs_scale
    steps = max(10, round(epochs * len(pairs) / cold.batch_size))
    cfg = SFTConfig.from_profile(profile, seed=seed, reasoning=True, n_examples=len(pairs), steps=steps)
    return sft_on_pairs(parent, pairs, cfg, profile, name=name, progress=progress, **extra)


def recipe_r1(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """DeepSeek-R1 in miniature, then its distillation table.

    cold-start SFT -> reasoning RL (accuracy + format + consistency) -> rejection sampling
    (correct traces only) -> SFT of the *base* on them -> final RL. Then the small model: SFT on
    the final model's correct traces (distillation) vs GRPO on the small model's own cold-start
    model with the same FLOPs budget."""
    result = RecipeResult("r1", profile.name, seed)
    ev = lambda art: evaluate(art.model, art.tokenizer, profile=profile, seed=seed, reasoning=True)
    cold = cold_start_artifact(profile, seed, progress)
    result.record("cold_start", cold, ev(cold))
    cfg = preset("grpo", reasoning_config(profile, seed=seed))
    rl1 = online_artifact(cold, profile, cfg, name="r1_reasoning_rl", signal=verifier("r1_consistency"),
                          progress=progress)
    result.record("reasoning_rl", rl1, ev(rl1))

    n_prompts = rejection_prompts(profile)
    traces, sample_stats = sample_traces(rl1, profile, n_prompts=n_prompts, seed=seed)
    # R1 mixes non-reasoning data into this SFT round; ours is the notes (chat) domain.
    mixed = traces + sft_dataset(("notes",), max(8, len(traces) // 4), seed=seed)
    base = base_artifact(profile, seed=seed, progress=progress)
    rs_sft = sft_on_traces(base, mixed, profile, seed, "r1_rejection_sft", progress)
    rs_sft.info.update(rejection=sample_stats)
    result.record("rejection_sft", rs_sft, ev(rs_sft))
    final = online_artifact(rs_sft, profile, replace(cfg, seed=seed + 1), name="r1_final_rl",
                            signal=verifier("r1"), progress=progress)
    result.record("final_rl", final, ev(final))

    # --- distillation into a smaller model vs RL on it (the R1 distillation table) ---
    small = profile.small_model_size
    teacher_traces, t_stats = sample_traces(final, profile, n_prompts=n_prompts, seed=seed + 7)
    if not teacher_traces:
        # Nothing verified-correct to distil (typical of the smoke profile): say so, don't fake it.
        warnings.warn(f"r1: the final model produced no correct traces on {t_stats['prompts']} "
                      "prompts; the distillation stages are skipped", stacklevel=2)
        result.info["distilled_small"] = {"skipped": "teacher produced no correct traces", **t_stats}
        return result
    small_base = base_artifact(profile, seed=seed, progress=progress, model_size=small)
    distilled = sft_on_traces(small_base, teacher_traces, profile, seed, "r1_distill", progress,
                              teacher=final.path.name)
    distill_flops = t_stats["flops"] + distilled.info.get("flops", 0.0)
    distilled.info.update(compute_flops=distill_flops, teacher_sampling=t_stats)
    result.record("distilled_small", distilled, ev(distilled))
    small_cold = cold_start_artifact(profile, seed, progress, model_size=small)
    rl_cfg = preset("grpo", reasoning_config(profile, seed=seed, steps=profile.rl_steps * 2,
                                             flops_budget=distill_flops))
    small_rl = online_artifact(small_cold, profile, rl_cfg, name="r1_small_rl", signal=verifier("r1"),
                               progress=progress)
    small_rl.info.update(compute_flops=small_rl.info.get("flops", 0.0))
    result.record("rl_small", small_rl, ev(small_rl))
    return result


RECIPES = {"tulu3": recipe_tulu3, "r1_zero": recipe_r1_zero, "r1": recipe_r1,
           "grpo_vs_drgrpo": recipe_grpo_vs_drgrpo}
# The cached stages each recipe builds, in order (the progress display shows "stage k/n" and
# estimates the time left from them; a test checks them against what a smoke run builds).
# "name:variant" marks a second stage of the same kind (the small model's base and cold start).
RECIPE_STAGES = {
    "tulu3": ("base", "sft:reasoning", "tulu3_dpo", "rlvr"),
    "r1_zero": ("base", "r1_zero"),
    "r1": ("base", "cold_start", "r1_reasoning_rl", "r1_rejection_sft", "r1_final_rl",
           "base:small", "r1_distill", "cold_start:small", "r1_small_rl"),
    "grpo_vs_drgrpo": ("base", "cold_start", "grpo", "dr_grpo"),
}
