"""On-policy distillation recipes: one teacher against RL on its domain (`opd`), and MOPD, every
domain's specialist distilled into one student against mixed-domain RL (`mopd`).

Both start from the reasoning SFT model (the student) and build their teachers from it
(`distill.specialist_artifact`: a fork trained further on its domain). Each student stage gets
the same number of steps and the same number of sampled completions per step; the compute
table adds what the teachers cost (their forward passes on the student's samples).

What each on-policy distillation mode changes relative to its paper, in this miniature:

* opd_sampled (Thinking Machines, Qwen3; Nemotron 3 Ultra): per-token advantage
  log p_T(y_t) - log p_S(y_t) on the student's sampled tokens in the clipped policy-gradient loss,
  token-level mean, no discount, no outcome reward (MiMo-V2-Flash's alpha x outcome advantage is
  `outcome_weight`, 0 here).
* opd_topk (trl's async distillation): the exact reverse KL over the student's k = 8 most likely
  tokens at each sampled prefix plus one tail bucket for the rest of the vocabulary.
* opd_full (DeepSeek V4): the exact reverse KL over the full vocabulary (105 tokens here) at each
  sampled prefix. DeepSeek V4 weighs several teachers per token; we route one teacher per prompt.
* opd_forward (GKD's on-policy forward KL, beta = 0; no frontier recipe uses it): the exact
  KL(p_T || p_S) over the full vocabulary at each sampled prefix. Here as the control the `count`
  probe called for: the reverse-KL modes collapse onto the student's majority behaviour when the
  student cannot yet tell the cases apart (RESULTS.md, "On-policy distillation on count").

`trace_sft` (SFT on verified teacher traces: R1's distillation, the frontier recipes' "SFT on
the specialists' outputs") and `warmup_artifact` (a light version of it before OPD, Nemotron 3
Ultra's warm-up) are the offline half of distillation.

`RecipeRun` is what the multi-teacher recipes share (`mopd` here, the frontier recipes in
`recipes_frontier.py`): the student, the specialists, mixed RL, MOPD, SFT on teacher traces,
and the tables.

The student samples 2 completions for each of 4x as many prompts as GRPO's groups of 8 (the same
completions per step): a teacher's signal needs no group baseline, and distinct prompts cover
more of the domain (with 1-token answers all samples of a prompt share the same context).
"""
from __future__ import annotations

import math
from dataclasses import replace

from . import distill
from .artifacts import RecipeResult, online_artifact, sft_artifact, sft_on_pairs
from .evaluation import evaluate
from .profiles import Profile
from .recipes_rl import reasoning_config, rejection_prompts, rl_selection, sample_traces, sft_on_traces, verifier
from .signals import RoutedTeacherSignal, TeacherSignal
from .stages.online import preset
from .stages.sft import SFTConfig
from .tasks import DIFFICULTIES, VERIFIABLE_DOMAINS

OPD_DOMAIN = "count"          # the domain the reasoning SFT leaves the most room on (v3: .51/.13/.01)
OPD_MODES = ("opd_sampled", "opd_topk", "opd_full", "opd_forward")
OPD_SAMPLES = 2               # completions per prompt in an OPD step (GRPO: the profile's group size)
OPD_LR_SCALE = 4.0            # OPD's learning rate: this x the profile's RL learning rate (a dense,
                              # per-token signal tolerates a larger step than a per-sequence reward)
TOPK = 8
WARMUP_OPD_STEPS = 20         # `warmup_artifact`: as many teacher traces as this many OPD steps sample


def opd_config(profile: Profile, mode: str, *, seed: int, domains):
    """The online config of an OPD stage: the GRPO stage's completions per step, spent on more
    prompts with `OPD_SAMPLES` samples each."""
    per_step = profile.rl_prompts * profile.rl_group_size
    base = reasoning_config(profile, seed=seed, domains=tuple(domains), difficulty=None,
                            prompts_per_step=max(1, per_step // OPD_SAMPLES), group_size=OPD_SAMPLES,
                            lr=profile.rl_lr * OPD_LR_SCALE)
    return preset(mode, base)


def teacher_mode(mode: str) -> dict:
    return {"opd_sampled": dict(mode="sampled"), "opd_topk": dict(mode="topk", k=TOPK),
            "opd_full": dict(mode="full"), "opd_jsd": dict(mode="full"), "opd_forward": dict(mode="full")}[mode]


def compute_row(stage: str, info: dict) -> dict:
    """The compute a stage spent: tokens sampled, trained on, scored by a teacher; FLOPs; time.
    An RL stage's prompt selection counts in its tokens generated, FLOPs and time; a trace SFT's
    teacher sampling in its FLOPs."""
    return {"stage": stage, "tokens generated": info.get("tokens_generated", 0),
            "tokens trained": info.get("tokens_trained", info.get("tokens", 0)),
            "teacher-scored tokens": info.get("signal_tokens", 0),
            "FLOPs": f"{info['flops']:.2e}" if info.get("flops") else "-",
            "wall s": round(info.get("wall_time", 0.0), 1)}


def recovery_rows(result: RecipeResult, *, start: str, teachers: dict[str, str], students) -> list[dict]:
    """Per domain: the start's accuracy, the domain's teacher (its stage) and its accuracy, each
    student stage's accuracy and the gap it recovered ((student - start) / (teacher - start))."""
    rows = []
    for domain, teacher in teachers.items():
        s0, t = result.evals[start].accuracy(domain), result.evals[teacher].accuracy(domain)
        row = {"domain": domain, start: round(s0, 3), "teacher": teacher, "teacher accuracy": round(t, 3)}
        for stage in students:
            acc = result.evals[stage].accuracy(domain)
            row[stage] = round(acc, 3)
            row[f"{stage} recovery"] = round(distill.gap_recovery(s0, acc, t), 2)
        rows.append(row)
    return rows


def trace_sft(parent, teachers: dict, profile: Profile, *, seed: int, name: str, progress: bool = True,
              epochs_scale: float = 1.0):
    """SFT of `parent` on verified traces each teacher ({domain: artifact}) samples on its own
    domain (as many prompts in all as R1's rejection round); cached. `epochs_scale` < 1: fewer
    epochs than a full distillation SFT. The sampling statistics are in the result's
    `info["traces"]`; its FLOPs include the teachers' sampling (`info["sft_flops"]`: the SFT
    alone), the convention of every stage that trains on a teacher's samples."""
    pairs, stats = _teacher_traces(teachers, profile, n_prompts=max(8, rejection_prompts(profile) // len(teachers)),
                                   seed=seed)
    if not pairs:
        raise RuntimeError(f"{name}: the teachers ({', '.join(teachers)}) produced no verified trace to train on")
    art = sft_on_traces(parent, pairs, profile, seed, name, progress,
                        teachers=sorted(a.path.name for a in teachers.values()), epochs_scale=epochs_scale)
    return _with_sampling(art, stats)


def _teacher_traces(teachers: dict, profile: Profile, *, n_prompts: int, seed: int, samples=None):
    """`(pairs, stats)`: the verified traces each teacher ({domain: artifact}) samples on its own
    domain (`recipes_rl.sample_traces`, `n_prompts` each), and the sampling statistics per domain."""
    pairs, stats = [], {}
    for domain, teacher in teachers.items():
        got, stats[domain] = sample_traces(teacher, profile, n_prompts=n_prompts, seed=seed, domains=(domain,),
                                           samples=samples)
        pairs += got
    return pairs, stats


def _with_sampling(art, stats: dict):
    """`art` (an SFT on teacher traces) with the sampling statistics in its info and the teachers'
    sampling added to its FLOPs (`sft_flops`: the SFT alone)."""
    art.info.update(traces=stats, sft_flops=art.info["flops"])    # a fresh dict per load
    art.info["flops"] += sum(st["flops"] for st in stats.values())
    return art


def warmup_traces(profile: Profile) -> int:
    """The warm-up's size per domain: as many traces as `WARMUP_OPD_STEPS` OPD steps sample."""
    return WARMUP_OPD_STEPS * profile.rl_prompts * profile.rl_group_size


def warmup_artifact(student, teacher, profile: Profile, domain: str, *, seed: int, traces: int | None = None,
                    progress: bool = True):
    """A warm-up before on-policy distillation (Nemotron 3 Ultra): one epoch of SFT of the student
    on `traces` verified teacher traces of `domain` (one sample per prompt, wrong ones dropped),
    so that the student's own samples move toward the teacher's support before it scores them.

    Light by default: as many traces as `WARMUP_OPD_STEPS` OPD steps sample completions (2,560 on
    `cpu`: a fifth of a 100-step OPD stage's completions, about a sixth of its FLOPs), one SFT
    epoch at the profile's SFT learning rate. On `count` (seed 0) that moves the student from 0.20
    to 0.38 and its per-token KL to the teacher from 0.85 to 0.58 nats; half as many traces move
    it to 0.22, twice as many to 0.60, and a full SFT on the teacher's traces (`trace_sft`, R1's
    distillation) to the teacher (RESULTS.md). The result's
    `info["traces"]` holds the sampling statistics; its FLOPs include the teacher's sampling."""
    return traces_artifact(student, {domain: teacher}, profile, seed=seed,
                           traces_per_domain=traces or warmup_traces(profile), name=f"warmup_{domain}",
                           progress=progress)


def traces_artifact(student, teachers: dict, profile: Profile, *, seed: int, traces_per_domain: int,
                    name: str, progress: bool = True):
    """One epoch of SFT of `student` on verified traces its teachers ({domain: artifact}) sample on
    their own domains, `traces_per_domain` prompts each, one sample per prompt, wrong ones dropped
    (cached; an error if no teacher produced one). `warmup_artifact` is its one-domain case; with as many traces as an on-policy run
    samples completions it is that run's offline counterpart at the same number of samples. The
    result's `info["traces"]` holds the sampling statistics per domain; its FLOPs include the
    teachers' sampling (`info["sft_flops"]`: the SFT alone)."""
    pairs, stats = _teacher_traces(teachers, profile, n_prompts=traces_per_domain, seed=seed,
                                   samples={level: 1 for level in DIFFICULTIES})
    if not pairs:
        names = ", ".join(f"{d} ({t.path.name})" for d, t in teachers.items())
        raise RuntimeError(f"{name}: the teachers produced no verified trace in {traces_per_domain} samples per "
                           f"domain to train on: {names}")
    cfg = SFTConfig.from_profile(profile, seed=seed, reasoning=True, domains=tuple(teachers), n_examples=len(pairs),
                                 steps=max(1, math.ceil(len(pairs) / profile.sft_batch_size)))
    names = [t.path.name for t in teachers.values()]
    art = sft_on_pairs(student, pairs, cfg, profile, name=name, progress=progress,
                       teacher=names[0] if len(names) == 1 else sorted(names))
    return _with_sampling(art, stats)


def mixed_rl_config(profile: Profile, seed: int, *, domains=VERIFIABLE_DOMAINS):
    """The online config of mixed-domain RL: GRPO with R1's reward on every domain and level."""
    return preset("grpo", reasoning_config(profile, seed=seed, domains=tuple(domains), difficulty=None))


class RecipeRun:
    """What the multi-teacher recipes (`mopd`, the frontier ones) do between their stages: build
    the student and one specialist per domain, train by mixed RL, MOPD or SFT on the teachers'
    traces, evaluate and record each stage, and tabulate recovery and compute (`done`)."""

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
        for d in VERIFIABLE_DOMAINS:
            art = distill.specialist_artifact(parent, self.profile, d, seed=self.seed, sft=sft, rl=rl,
                                              progress=self.progress)
            stage = f"teacher_{d}{tag}"
            self.result.record(stage, art, self.evaluate(art, (d,)))
            self.teachers[d] = stage
            teachers[d] = art
        return teachers

    def trace_sft(self, parent, teachers, name: str, *, epochs_scale: float = 1.0):
        return trace_sft(parent, teachers, self.profile, seed=self.seed, name=name, progress=self.progress,
                         epochs_scale=epochs_scale)

    def warmup(self, parent, teachers, name: str):
        """Nemotron 3 Ultra's warm-up before MOPD: `warmup_artifact`'s size for every domain."""
        return traces_artifact(parent, teachers, self.profile, seed=self.seed,
                               traces_per_domain=warmup_traces(self.profile), name=name, progress=self.progress)

    def mixed_rl(self, parent, name: str = "mixed_rl", *, domains=VERIFIABLE_DOMAINS, steps=None):
        cfg = mixed_rl_config(self.profile, self.seed, domains=domains)
        if steps is not None:
            cfg = replace(cfg, steps=steps)
        return online_artifact(parent, self.profile, cfg, name=name, signal=verifier("r1"),
                               selection=rl_selection(self.profile, cfg.steps), progress=self.progress)

    def mopd(self, parent, teachers, name: str, *, mode: str, algo: str, outcome_weight: float = 0.0,
             weights: dict | None = None, **config):
        """Routed OPD of `parent` from `teachers` ({domain: artifact}); `config`: fields of the
        online config to change (`steps`, `lr`), for probes off the recipes' settings."""
        signal = RoutedTeacherSignal({d: TeacherSignal(a.model, mode=mode, key=a.path.name)
                                      for d, a in teachers.items()}, weights=weights)
        cfg = replace(opd_config(self.profile, algo, seed=self.seed, domains=VERIFIABLE_DOMAINS),
                      outcome_weight=outcome_weight, **config)
        return online_artifact(parent, self.profile, cfg, name=name, signal=signal, progress=self.progress)

    def done(self) -> RecipeResult:
        res = self.result
        if self.teachers:
            res.tables["per domain: accuracy and gap recovery (greedy, held-out)"] = recovery_rows(
                res, start="student", teachers=self.teachers, students=self.students)
        else:
            res.tables["per domain: accuracy (greedy, held-out)"] = [
                {"domain": d, **{s: round(res.evals[s].accuracy(d), 3) for s in ["student", *self.students]}}
                for d in VERIFIABLE_DOMAINS]
        rows = [compute_row(s, res.info[s]) for s in res.evals if s != "student"]
        total = sum(float(res.info[s].get("flops", 0.0) or 0.0) for s in res.evals if s != "student")
        rows.append({"stage": "total", "FLOPs": f"{total:.2e}",
                     "wall s": round(sum(r["wall s"] for r in rows), 1)})
        res.tables["compute per stage"] = rows
        return res


def recipe_opd(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """On-policy distillation vs RL on one domain (`OPD_DOMAIN`), at the same completions per step.

    student (reasoning SFT) -> teacher (the student forked and trained further on the domain) ->
    the student trained on the domain's prompts by GRPO with the verifier, and by distillation
    from the teacher in each mode (`OPD_MODES`). The tables: accuracy and gap recovery on the
    domain, compute per stage, and the teacher's support overlap with the student's samples."""
    domain = OPD_DOMAIN
    result = RecipeResult("opd", profile.name, seed)
    ev = lambda art: evaluate(art.model, art.tokenizer, profile=profile, seed=seed, reasoning=True)  # noqa: E731
    student = sft_artifact(profile, seed=seed, reasoning=True, progress=progress)
    result.record("student", student, ev(student))
    teacher = distill.specialist_artifact(student, profile, domain, seed=seed, progress=progress)
    result.record("teacher", teacher, ev(teacher))

    grpo = preset("grpo", reasoning_config(profile, seed=seed, domains=(domain,), difficulty=None))
    rl = online_artifact(student, profile, grpo, name="opd_grpo", signal=verifier("r1"), progress=progress)
    result.record("grpo", rl, ev(rl))
    for mode in OPD_MODES:
        signal = TeacherSignal(teacher.model, key=teacher.path.name, **teacher_mode(mode))
        art = online_artifact(student, profile, opd_config(profile, mode, seed=seed, domains=(domain,)),
                              name=mode, signal=signal, progress=progress)
        result.record(mode, art, ev(art))
    students = ["grpo", *OPD_MODES]
    result.tables[f"{domain}: accuracy and gap recovery (greedy, held-out)"] = recovery_rows(
        result, start="student", teachers={domain: "teacher"}, students=students)
    result.tables["compute per stage"] = [compute_row(s, result.info[s]) for s in ["teacher", *students]]
    result.tables["support overlap with the student's samples (T=1)"] = overlap_rows(
        student, {"teacher (forked)": teacher}, profile, domain, seed=seed, max_new_tokens=grpo.max_new_tokens)
    return result


def recipe_mopd(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """MOPD (MiMo-V2-Flash, DeepSeek V4): one specialist per verifiable domain, forked from the
    student, each rollout scored by the teacher of its prompt's domain (`RoutedTeacherSignal`).
    Two students: `mopd`, the exact full-vocabulary reverse KL (DeepSeek V4), and `mopd_forward`,
    the same routing with the full-vocabulary forward KL (the fix the `count` probe found where the
    student lacks a skill: RESULTS.md); against mixed-domain GRPO from the same student at the same
    completions per step (on the prompts the student sometimes solves, as `tulu3`'s RLVR). The
    tables: each domain's start, teacher, MOPD and mixed-RL accuracy and the gap each recovered;
    the compute of every stage."""
    run = RecipeRun("mopd", profile, seed, progress)
    student = run.student()
    teachers = run.specialists(student)
    run.stage("mopd", run.mopd(student, teachers, "mopd", mode="full", algo="opd_full"))
    run.stage("mopd_forward", run.mopd(student, teachers, "mopd_forward", mode="full", algo="opd_forward"))
    run.stage("mixed_rl", run.mixed_rl(student))
    return run.done()


def overlap_rows(student, teachers: dict, profile: Profile, domain: str, *, seed: int, max_new_tokens: int):
    """One row per teacher (label -> artifact): its support overlap with the student's own samples
    on held-out `domain` prompts (`distill.measure_overlap`, top-`TOPK`)."""
    from .tasks import get_task
    examples = get_task(domain).sample(max(8, profile.eval_per_level), split="test", seed=seed + 77)
    return [{"teacher": label, **{k: round(v, 3) for k, v in distill.measure_overlap(
        student.model, teacher.model, student.tokenizer, examples, max_new_tokens=max_new_tokens, k=TOPK,
        seed=seed).items()}} for label, teacher in teachers.items()]


RECIPES = {"opd": recipe_opd, "mopd": recipe_mopd}
RECIPE_STAGES = {
    "opd": ("base", "sft:reasoning", f"specialist_{OPD_DOMAIN}", "opd_grpo", *OPD_MODES),
    "mopd": ("base", "sft:reasoning", *(f"specialist_{d}" for d in VERIFIABLE_DOMAINS), "mopd", "mopd_forward",
             "mixed_rl"),
}
