"""Progressive distillation: the teacher's intermediate checkpoints against its final checkpoint.

Panigrahi et al. (ICLR 2025, arXiv 2410.05464) distil a student from a sequence of the teacher's
own training checkpoints instead of only the final one, and find that it learns faster (sparse
parity, PCFGs, BERT's masked prediction): an intermediate teacher carries an implicit curriculum,
simpler signals the student can pick up before the final teacher's sharp ones. Their best single
intermediate checkpoint lies just after the teacher's own phase transition.

What this miniature changes:

* Their distillation is classic KD (the teacher's logits on a fixed data set, a forward-KL or
  cross-entropy loss). Here it is on-policy: the student samples its own rollouts on
  `OPD_DOMAIN` and is trained by an OPD mode (`PROGRESSIVE_MODES`: the exact full-vocabulary
  reverse KL, and the forward KL that installs a skill the student lacks; RESULTS.md, "On-policy
  distillation on count").
* Their checkpoints come from the teacher's pretraining. Ours come from the specialist's domain
  SFT (`distill.teacher_checkpoint`: the same run stopped early, same data order, same schedule),
  at `PROGRESSIVE_AT` of its steps, chosen around its drop in loss.
* Both arms train for the same steps, split into one equal segment per checkpoint (each segment a
  cached online stage whose learning-rate schedule restarts): `final` distils from the final
  teacher in every segment, `progressive` from the checkpoints in order, the final teacher last.
  Compute counts every segment and its teacher's forward passes.
"""
from __future__ import annotations

from dataclasses import replace

from . import distill
from .artifacts import Artifact, RecipeResult, joined, online_artifact, sft_artifact
from .evaluation import evaluate
from .profiles import Profile
from .recipes_opd import OPD_DOMAIN, compute_row, opd_config, overlap_rows, recovery_rows, teacher_mode
from .signals import TeacherSignal

PROGRESSIVE_AT = (0.1, 0.2)     # intermediate teachers, as fractions of the specialist's SFT steps (v3,
                                # seed 0, `count`: its loss falls from 0.06 to 0.01 between steps 60 and 120 of 500)
PROGRESSIVE_MODES = ("opd_full", "opd_forward")
SEGMENT_SEED = 1000             # segment i samples prompts with seed + i x this (no segment repeats another's)


def progressive_artifact(student: Artifact, teachers, profile: Profile, mode: str, *, seed: int, name: str,
                         domains=(OPD_DOMAIN,), steps: int | None = None, progress: bool = True) -> Artifact:
    """`student` distilled by OPD `mode` from each of `teachers` in turn: one cached online stage
    per teacher (`name`_1, `name`_2, ...), the steps (`steps`, default the profile's RL steps)
    split evenly with the remainder on the last. Returns the stages `joined` into one run."""
    teachers = list(teachers)
    if not teachers:
        raise ValueError("progressive_artifact needs at least one teacher")
    cfg = opd_config(profile, mode, seed=seed, domains=domains)
    total = cfg.steps if steps is None else steps
    if total < len(teachers):
        raise ValueError(f"{total} steps cannot be split over {len(teachers)} teachers: give each at least one")
    per = total // len(teachers)
    parts, art = [], student
    for i, teacher in enumerate(teachers):
        n = per if i < len(teachers) - 1 else total - per * (len(teachers) - 1)
        signal = TeacherSignal(teacher.model, key=teacher.path.name, **teacher_mode(mode))
        art = online_artifact(art, profile, replace(cfg, steps=n, seed=seed + SEGMENT_SEED * i),
                              name=f"{name}_{i + 1}", signal=signal, progress=progress)
        parts.append(art)
    return joined(parts)


def recipe_progressive(profile: Profile, seed: int = 0, progress: bool = True) -> RecipeResult:
    """Progressive distillation on `OPD_DOMAIN` (module docstring): the student (reasoning SFT),
    the specialist's checkpoints at `PROGRESSIVE_AT` of its SFT and at the end, and per OPD mode
    two students: `<mode>:final` (the final teacher throughout) and `<mode>:progressive` (the
    checkpoints in order). Tables: accuracy and gap recovery (towards the final teacher), the
    compute of every stage, and each teacher's support overlap with the student's samples."""
    domain = OPD_DOMAIN
    result = RecipeResult("progressive", profile.name, seed)
    ev = lambda art: evaluate(art.model, art.tokenizer, tasks=(domain,), profile=profile, seed=seed,  # noqa: E731
                              reasoning=True)
    student = sft_artifact(profile, seed=seed, reasoning=True, progress=progress)
    result.record("student", student, ev(student))
    labels = [f"teacher@{f:g}" for f in (*PROGRESSIVE_AT, 1)]
    teachers = [distill.teacher_checkpoint(student, profile, domain, fraction=f, seed=seed, progress=progress)
                for f in (*PROGRESSIVE_AT, 1.0)]
    for label, teacher in zip(labels, teachers):
        result.record(label, teacher, ev(teacher))
    students = []
    for mode in PROGRESSIVE_MODES:
        for arm, sequence in (("final", [teachers[-1]] * len(teachers)), ("progressive", teachers)):
            stage = f"{mode}:{arm}"
            art = progressive_artifact(student, sequence, profile, mode, seed=seed,
                                       name=f"progressive_{mode}_{arm}", progress=progress)
            result.record(stage, art, ev(art))
            students.append(stage)
    result.tables[f"{domain}: accuracy and gap recovery (greedy, held-out)"] = recovery_rows(
        result, start="student", teachers={domain: labels[-1]}, students=[*labels[:-1], *students])
    result.tables["compute per stage"] = [compute_row(s, result.info[s]) for s in [*labels, *students]]
    result.tables["support overlap with the student's samples (T=1)"] = overlap_rows(
        student, dict(zip(labels, teachers)), profile, domain, seed=seed,
        max_new_tokens=opd_config(profile, PROGRESSIVE_MODES[0], seed=seed, domains=(domain,)).max_new_tokens)
    return result


RECIPES = {"progressive": recipe_progressive}
RECIPE_STAGES = {"progressive": ("base", "sft:reasoning", *(f"specialist_{OPD_DOMAIN}:at{f:g}" for f in PROGRESSIVE_AT),
                                 f"specialist_{OPD_DOMAIN}",
                                 *(f"progressive_{m}_{a}_{i}" for m in PROGRESSIVE_MODES for a in ("final", "progressive")
                                   for i in range(1, len(PROGRESSIVE_AT) + 2)))}
