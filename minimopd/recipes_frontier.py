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
  from the RLVR model -> warm-up SFT of the student on their traces -> MOPD round 1
  (sampled-token) -> teachers refreshed from the round-1 student -> MOPD round 2. Its teachers
  learn from external models' data; ours from the tasks' worked solutions (the foreign-teacher
  variant is `distill.specialist_artifact(foreign=True)`). No MTP stage.
* mai_thinking1 (MAI-Thinking-1): specialist RL "climbs" (domain RL alone, no domain SFT; one per
  domain, the report has three) -> SFT of the student on their traces -> a final mixed RL climb.
* glm5 (GLM-5): RL staged by capability: one GRPO stage per domain in turn (the report's
  reasoning -> agentic -> general), each a quarter of one mixed run's steps.
* kimi_k25 (Kimi K2.5): SFT -> one mixed multi-domain GRPO run (text only here).
"""
from __future__ import annotations

from dataclasses import replace

from . import distill
from .artifacts import RecipeResult, online_artifact, sft_artifact
from .evaluation import evaluate
from .profiles import Profile
from .recipes_opd import _opd_config, compute_row, recovery_rows
from .recipes_rl import reasoning_config, rejection_prompts, rl_selection, sample_traces, sft_on_traces, verifier
from .signals import RoutedTeacherSignal, TeacherSignal
from .stages.online import preset
from .tasks import VERIFIABLE_DOMAINS

MIMO_ALPHA = 0.5          # weight of the outcome advantage in MiMo-V2-Flash's MOPD (ours)
WARMUP_EPOCHS = 0.25      # Nemotron's warm-up SFT: a quarter of the epochs of a full SFT on the traces
D = VERIFIABLE_DOMAINS


class _Run:
    """What every frontier recipe does between its stages: evaluate, record, tabulate."""

    def __init__(self, name: str, profile: Profile, seed: int, progress: bool):
        self.profile, self.seed, self.progress = profile, seed, progress
        self.result = RecipeResult(name, profile.name, seed)
        self.teachers: dict[str, str] = {}          # domain -> the stage of its (last) teacher
        self.students: list[str] = []

    def evaluate(self, art, domains=None):
        return evaluate(art.model, art.tokenizer, tasks=domains, profile=self.profile, seed=self.seed,
                        reasoning=True)

    def student(self):
        art = sft_artifact(self.profile, seed=self.seed, reasoning=True, progress=self.progress)
        self.result.record("student", art, self.evaluate(art))
        return art

    def stage(self, stage: str, art, *, student: bool = True):
        self.result.record(stage, art, self.evaluate(art))
        if student:
            self.students.append(stage)
        return art

    def specialists(self, parent, *, sft=True, rl=False, tag=""):
        teachers = {}
        for d in D:
            art = distill.specialist_artifact(parent, self.profile, d, seed=self.seed, sft=sft, rl=rl,
                                              progress=self.progress)
            stage = f"teacher_{d}{tag}"
            self.result.record(stage, art, self.evaluate(art, (d,)))
            self.teachers[d] = stage
            teachers[d] = art
        return teachers

    def trace_sft(self, parent, teachers, name: str, *, epochs_scale: float = 1.0):
        """SFT of `parent` on verified traces each teacher samples on its own domain (as many
        prompts in all as R1's rejection round)."""
        pairs, stats = [], {}
        n = max(8, rejection_prompts(self.profile) // len(teachers))
        for d, art in teachers.items():
            got, stats[d] = sample_traces(art, self.profile, n_prompts=n, seed=self.seed, domains=(d,))
            pairs += got
        if not pairs:
            raise RuntimeError(f"{self.result.name}: the teachers produced no verified trace to train on")
        art = sft_on_traces(parent, pairs, self.profile, self.seed, name, self.progress,
                            teachers=sorted(a.path.name for a in teachers.values()), epochs_scale=epochs_scale)
        art.info.update(traces=stats)
        return art

    def mixed_rl(self, parent, name: str = "mixed_rl", *, domains=D, steps=None):
        cfg = preset("grpo", reasoning_config(self.profile, seed=self.seed, domains=tuple(domains), difficulty=None))
        if steps is not None:
            cfg = replace(cfg, steps=steps)
        return online_artifact(parent, self.profile, cfg, name=name, signal=verifier("r1"),
                               selection=rl_selection(self.profile), progress=self.progress)

    def mopd(self, parent, teachers, name: str, *, mode: str, algo: str, outcome_weight: float = 0.0):
        signal = RoutedTeacherSignal({d: TeacherSignal(a.model, mode=mode, key=a.path.name)
                                      for d, a in teachers.items()})
        cfg = replace(_opd_config(self.profile, algo, seed=self.seed, domains=D), outcome_weight=outcome_weight)
        return online_artifact(parent, self.profile, cfg, name=name, signal=signal, progress=self.progress)

    def done(self) -> RecipeResult:
        res = self.result
        if self.teachers:
            res.tables["per domain: accuracy and gap recovery (greedy, held-out)"] = recovery_rows(
                res, start="student", teachers=self.teachers, students=self.students)
        else:
            res.tables["per domain: accuracy (greedy, held-out)"] = [
                {"domain": d, **{s: round(res.evals[s].accuracy(d), 3) for s in ["student", *self.students]}}
                for d in D]
        rows = [compute_row(s, res.info[s]) for s in res.evals if s != "student"]
        total = sum(float(res.info[s].get("flops", 0.0) or 0.0) for s in res.evals if s != "student")
        rows.append({"stage": "total", "FLOPs": f"{total:.2e}",
                     "wall s": round(sum(r["wall s"] for r in rows), 1)})
        res.tables["compute per stage"] = rows
        return res


def recipe_deepseek_v32(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("deepseek_v32", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student, rl=True)
    merged = run.stage("distill_sft", run.trace_sft(student, teachers, "v32_distill"))
    run.stage("mixed_rl", run.mixed_rl(merged, "v32_mixed_rl"))
    return run.done()


def recipe_mimo_v2_flash(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("mimo_v2_flash", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student, rl=True)
    run.stage("mopd", run.mopd(student, teachers, "mimo_mopd", mode="sampled", algo="mopd_mimo",
                               outcome_weight=MIMO_ALPHA))
    return run.done()


def recipe_deepseek_v4(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("deepseek_v4", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student, rl=True)
    run.stage("mopd", run.mopd(student, teachers, "v4_mopd", mode="full", algo="opd_full"))
    return run.done()


def recipe_nemotron3_ultra(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("nemotron3_ultra", profile, seed, progress)
    student = run.student()
    rlvr = run.stage("rlvr", run.mixed_rl(student))
    teachers = run.specialists(rlvr)
    warm = run.stage("warmup_sft", run.trace_sft(rlvr, teachers, "nemotron_warmup", epochs_scale=WARMUP_EPOCHS))
    round1 = run.stage("mopd_round1", run.mopd(warm, teachers, "nemotron_mopd1", mode="sampled", algo="opd_sampled"))
    refreshed = run.specialists(round1, tag="_round2")
    run.stage("mopd_round2", run.mopd(round1, refreshed, "nemotron_mopd2", mode="sampled", algo="opd_sampled"))
    return run.done()


def recipe_mai_thinking1(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("mai_thinking1", profile, seed, progress)
    student = run.student()
    climbs = run.specialists(student, sft=False, rl=True)
    merged = run.stage("distill_sft", run.trace_sft(student, climbs, "mai_distill"))
    run.stage("final_rl", run.mixed_rl(merged, "mai_final_rl"))
    return run.done()


def recipe_glm5(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("glm5", profile, seed, progress)
    art = run.student()
    steps = max(1, profile.rl_steps // len(D))
    for d in D:
        art = run.stage(f"rl_{d}", run.mixed_rl(art, f"glm5_rl_{d}", domains=(d,), steps=steps))
    return run.done()


def recipe_kimi_k25(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    run = _Run("kimi_k25", profile, seed, progress)
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
