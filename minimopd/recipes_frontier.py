"""The 2025-2026 frontier post-training recipes, in miniature, from one student (the reasoning SFT
model) and one specialist per verifiable domain (`distill.specialist_artifact`, forked from the
student unless said otherwise). Each records every teacher's accuracy on its domain, the
student's accuracy per domain with the gap it recovered, and the compute of every stage. Every
RL stage uses R1's rule reward (accuracy + 0.5 x format) on the prompts its model sometimes
solves (`rl_selection`).

What each changes relative to its report, in this miniature:

* deepseek_v32 (DeepSeek V3.2): specialists by domain SFT + RL -> SFT of the student on their
  verified traces -> one mixed-domain GRPO run. The report merges six specialists; we have four.
* mimo_v2_flash (MiMo-V2-Flash): SFT -> specialists by domain SFT + RL -> MOPD with the
  sampled-token advantage + alpha x the outcome (GRPO) advantage, truncated importance weights
  (`mopd_mimo`; alpha = `MIMO_ALPHA`, ours: the report does not fix it for us).
* deepseek_v4 (DeepSeek V4): specialists forked from one model, by domain SFT + RL -> MOPD by
  the exact full-vocabulary reverse KL; the student gets no RL. V4 weighs several teachers per
  token; we route one teacher per prompt.
* nemotron3_ultra (Nemotron 3 Ultra): SFT -> unified RLVR -> specialists by domain SFT forked
  from the RLVR model -> warm-up SFT of the student on their traces (one epoch on as many as 20
  OPD steps sample, per domain: `RecipeRun.warmup`, sized on `count` so that it moves the student
  partway into the teacher's support, RESULTS.md) -> MOPD round 1
  (sampled-token) -> teachers refreshed from the round-1 student -> MOPD round 2. Its teachers
  learn from external models' data; ours from the tasks' worked solutions (the foreign-teacher
  variant is `distill.specialist_artifact(foreign=True)`). No MTP stage.
* mai_thinking1 (MAI-Thinking-1): specialist RL "climbs" (domain RL alone, no domain SFT; one per
  domain, the report has three) -> SFT of the student on their traces -> a final mixed RL climb.
* glm5 (GLM-5): RL staged by capability: one GRPO stage per domain in turn (the report's
  reasoning -> agentic -> general), each a quarter of one mixed run's steps and selecting
  candidate prompts for its own steps. Nothing here guards the earlier domains against
  forgetting, so what a later stage costs them shows in the per-domain table (RESULTS.md).
* kimi_k25 (Kimi K2.5): SFT -> one mixed multi-domain GRPO run (text only here).
"""
from __future__ import annotations

from .artifacts import RecipeResult
from .profiles import Profile
from .recipes_opd import RecipeRun
from .tasks import VERIFIABLE_DOMAINS

MIMO_ALPHA = 0.5          # weight of the outcome advantage in MiMo-V2-Flash's MOPD (ours)
D = VERIFIABLE_DOMAINS


def recipe_deepseek_v32(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("deepseek_v32", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student, rl=True)
    merged = run.stage("distill_sft", run.trace_sft(student, teachers, "v32_distill"))
    run.stage("mixed_rl", run.mixed_rl(merged, "v32_mixed_rl"))
    return run.done()


def recipe_mimo_v2_flash(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("mimo_v2_flash", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student, rl=True)
    run.stage("mopd", run.mopd(student, teachers, "mimo_mopd", mode="sampled", algo="mopd_mimo",
                               outcome_weight=MIMO_ALPHA))
    return run.done()


def recipe_deepseek_v4(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("deepseek_v4", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student, rl=True)
    run.stage("mopd", run.mopd(student, teachers, "v4_mopd", mode="full", algo="opd_full"))
    return run.done()


def recipe_nemotron3_ultra(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("nemotron3_ultra", profile, seed, progress)
    student = run.student()
    rlvr = run.stage("rlvr", run.mixed_rl(student))
    teachers = run.specialists(rlvr)
    warm = run.stage("warmup_sft", run.warmup(rlvr, teachers, "nemotron_warmup"))
    round1 = run.stage("mopd_round1", run.mopd(warm, teachers, "nemotron_mopd1", mode="sampled", algo="opd_sampled"))
    refreshed = run.specialists(round1, tag="_round2")
    run.stage("mopd_round2", run.mopd(round1, refreshed, "nemotron_mopd2", mode="sampled", algo="opd_sampled"))
    return run.done()


def recipe_mai_thinking1(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("mai_thinking1", profile, seed, progress)
    student = run.student()
    climbs = run.specialists(student, sft=False, rl=True)
    merged = run.stage("distill_sft", run.trace_sft(student, climbs, "mai_distill"))
    run.stage("final_rl", run.mixed_rl(merged, "mai_final_rl"))
    return run.done()


def recipe_glm5(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("glm5", profile, seed, progress)
    art = run.student()
    steps = max(1, profile.rl_steps // len(D))
    for d in D:
        art = run.stage(f"rl_{d}", run.mixed_rl(art, f"glm5_rl_{d}", domains=(d,), steps=steps))
    return run.done()


def recipe_kimi_k25(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = RecipeRun("kimi_k25", profile, seed, progress)
    student = run.student()
    run.stage("mixed_rl", run.mixed_rl(student))
    return run.done()


def _specialist_stages(tag: str = "", rl: bool = False, sft: bool = True) -> tuple[str, ...]:
    out = []
    for d in D:
        if sft:
            out.append(f"specialist_{d}{tag}")
        if rl:
            out.append(f"specialist_{d}_rl{tag}")
    return tuple(out)


RECIPES = {"deepseek_v32": recipe_deepseek_v32, "mimo_v2_flash": recipe_mimo_v2_flash,
           "deepseek_v4": recipe_deepseek_v4, "nemotron3_ultra": recipe_nemotron3_ultra,
           "mai_thinking1": recipe_mai_thinking1, "glm5": recipe_glm5, "kimi_k25": recipe_kimi_k25}
_START = ("base", "sft:reasoning")
RECIPE_STAGES = {
    "deepseek_v32": (*_START, *_specialist_stages(rl=True), "v32_distill", "v32_mixed_rl"),
    "mimo_v2_flash": (*_START, *_specialist_stages(rl=True), "mimo_mopd"),
    "deepseek_v4": (*_START, *_specialist_stages(rl=True), "v4_mopd"),
    "nemotron3_ultra": (*_START, "mixed_rl", *_specialist_stages(":from_rlvr"), "nemotron_warmup",
                        "nemotron_mopd1", *_specialist_stages(":round2"), "nemotron_mopd2"),
    "mai_thinking1": (*_START, *_specialist_stages(":climb", rl=True, sft=False), "mai_distill", "mai_final_rl"),
    "glm5": (*_START, *(f"glm5_rl_{d}" for d in D)),
    "kimi_k25": (*_START, "mixed_rl"),
}
