"""On-policy distillation around the online loop: specialist teachers, how much of a teacher's
gain a student recovers, and how much the student's own samples overlap the teacher's support.

    teacher = specialist_artifact(sft, profile, "count", seed=0)            # forked: SFT -> domain SFT
    foreign = specialist_artifact(sft, profile, "count", seed=0, foreign=True)   # grown from another base
    early = teacher_checkpoint(sft, profile, "count", fraction=0.2)          # its run, stopped at 20%
    overlap = measure_overlap(sft.model, teacher.model, sft.tokenizer, examples, profile=profile)
    gap_recovery(start=0.13, student=0.45, teacher=0.78)                   # 0.49

The training itself is the online loop (`stages/online.py`) with a `TeacherSignal` (one teacher)
or a `RoutedTeacherSignal` (MOPD) and one of the presets `opd_sampled`, `opd_topk`, `opd_full`,
`opd_forward` (`opd_jsd`). A warm-up SFT on the teacher's traces before it is
`recipes_opd.warmup_artifact`.

A *forked* specialist continues from the student's own checkpoint on its domain (DeepSeek V4's
teachers are forks of one base): student and teacher start with the same support. A *foreign*
specialist is the forked specialist of another world, `foreign_seed(seed)`'s base (another
initialisation and another draw of the corpus; same tokenizer), its reasoning SFT and its domain
SFT. The same skill, reached by a different network, so the student's samples are less likely
under it (the MOPD paper's foreign teachers, Nemotron 3 Ultra's warm-up SFT). Being exactly the
next seed's forked specialist (seed 2's is seed 0's: the three seeds of a claim teach each other in
a ring), it costs nothing extra in a three-seed study.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .artifacts import Artifact, base_artifact, online_artifact, sft_artifact, sft_on_pairs
from .decoder import window_forward
from .kl import token_log_softmax
from .masked import masked_mean
from .profiles import Profile
from .rollout import generate
from .stages.online import OnlineConfig, preset
from .stages.sft import SFTConfig, sft_dataset
from .tasks import VERIFIABLE_DOMAINS

__all__ = ["FOREIGN_SEED", "CLAIM_SEEDS", "foreign_seed", "specialist_artifact", "specialist_sft_config", "teacher_checkpoint", "gap_recovery", "compute_to_reach",
           "support_overlap", "scored_samples", "measure_overlap", "disagreements"]

FOREIGN_SEED = 1         # a foreign teacher of seed s is the forked specialist of seed s + FOREIGN_SEED ...
CLAIM_SEEDS = 3          # ... counted modulo the seeds of a claim (RESULTS.md: mean and spread over three)


def foreign_seed(seed: int) -> int:
    """The world whose forked specialist is seed `seed`'s foreign teacher: the next seed, in a ring
    of `CLAIM_SEEDS` (0 -> 1 -> 2 -> 0), so a three-seed study grows no world beyond its own three.
    Seeds past the ring join it by their remainder (5 -> 0); the result is never `seed` itself."""
    if seed < 0:
        raise ValueError(f"a world seed is a non-negative integer, got {seed}")
    return (seed % CLAIM_SEEDS + FOREIGN_SEED) % CLAIM_SEEDS


def specialist_sft_config(profile: Profile, domain: str, seed: int) -> SFTConfig:
    """A specialist's domain SFT: worked traces of its domain only, for half the SFT steps at a
    third of the SFT learning rate (continued training: the student's general skills stay, the
    domain gets the steps the mixed SFT spread over four domains)."""
    if domain not in VERIFIABLE_DOMAINS:
        raise ValueError(f"a specialist needs a verifiable domain (one of {', '.join(VERIFIABLE_DOMAINS)}), "
                         f"got {domain!r}")
    return SFTConfig.from_profile(profile, seed=seed, reasoning=True, domains=(domain,),
                                  n_examples=max(40, profile.sft_examples // 8),
                                  steps=max(10, profile.sft_steps // 2), lr=profile.sft_lr / 3)


def specialist_artifact(student: Artifact, profile: Profile, domain: str, *, seed: int = 0,
                        foreign: bool = False, sft: bool = True, rl: bool = False,
                        progress: bool = True) -> Artifact:
    """A specialist teacher for `domain` (cached).

    Forked (default): `student` (the checkpoint the student starts from) -> SFT on the domain's
    worked traces. Foreign: the forked specialist of world `foreign_seed(seed)` (its base ->
    its reasoning SFT -> domain SFT, all with that seed; the same cached stages as that seed's
    own forked specialist); `student` is then used only for its tokenizer check.
    `rl=True` adds a domain RL stage (GRPO with R1's rule reward, accuracy + 0.5 x format, on
    the domain's prompts the model sometimes solves);
    `sft=False` skips the domain SFT (a specialist grown by RL alone: an RL "climb")."""
    if not (sft or rl):
        raise ValueError("a specialist needs domain SFT, domain RL or both (sft=True and/or rl=True)")
    cfg = specialist_sft_config(profile, domain, seed)
    if foreign:
        other = foreign_seed(seed)
        base = base_artifact(profile, seed=other, progress=progress)
        if base.tokenizer.get_vocab() != student.tokenizer.get_vocab():
            raise ValueError("the foreign base has another vocabulary; teacher and student must share "
                             "one tokenizer")
        start = sft_artifact(profile, seed=other, reasoning=True, progress=progress)
        return specialist_artifact(start, profile, domain, seed=other, sft=sft, rl=rl, progress=progress)
    name = f"specialist_{domain}"
    art = student
    if sft:
        art = sft_on_pairs(student, _specialist_pairs(domain, cfg, seed), cfg, profile, name=name, progress=progress)
    if rl:
        from .recipes_rl import REASONING_TOKENS, rl_selection, verifier
        rl_cfg = preset("grpo", OnlineConfig.from_profile(
            profile, seed=seed, domains=(domain,), difficulty=None,
            max_new_tokens=profile.max_new_tokens * REASONING_TOKENS))
        domain_sft = art
        art = online_artifact(art, profile, rl_cfg, name=f"{name}_rl", signal=verifier("r1"),
                              selection=rl_selection(profile), progress=progress)
        if sft:   # the teacher's whole build, for `report.lineage_rows`: its domain SFT and this RL stage
            art.info["build_flops"] = sum(float(a.info.get("flops") or 0.0) for a in (domain_sft, art))
    return art


def _specialist_pairs(domain: str, cfg: SFTConfig, seed: int):
    return sft_dataset((domain,), cfg.n_examples, seed=seed + 31, reasoning=True)


def teacher_checkpoint(student: Artifact, profile: Profile, domain: str, *, fraction: float, seed: int = 0,
                       progress: bool = True) -> Artifact:
    """The forked specialist of `domain` as it was `fraction` of the way through its domain SFT
    (cached): the same run, same examples in the same order under the same learning-rate
    schedule, stopped after round(fraction x steps) of its steps. `fraction=1` is the specialist
    itself (`sft_on_pairs` treats the last step as the whole run: same cache entry). Re-run here:
    where the final specialist was shipped from another machine, the re-run's floats can differ
    in the last bits. Progressive distillation's intermediate teachers (Panigrahi et al., ICLR
    2025: a checkpoint from the middle of the teacher's training can teach faster than the final
    teacher)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1] (the share of the specialist's SFT steps), got {fraction}")
    cfg = specialist_sft_config(profile, domain, seed)
    step = max(1, round(fraction * cfg.steps))
    return sft_on_pairs(student, _specialist_pairs(domain, cfg, seed), cfg, profile, name=f"specialist_{domain}",
                        stop_at=step, progress=progress)


def gap_recovery(start: float, student: float, teacher: float) -> float:
    """The fraction of the teacher's gain the student recovered: (student - start) / (teacher -
    start). 1: the student reached the teacher; 0: no gain; < 0: it lost ground. NaN when the
    teacher is not better than the start (there was no gap to recover)."""
    gap = teacher - start
    if not gap > 1e-9:
        return float("nan")
    return (student - start) / gap


def compute_to_reach(flops: Sequence[float], accuracy: Sequence[float], target: float, *,
                     window: int = 10) -> float:
    """The compute a run spent until its accuracy first reached `target`: `flops[i]` at the first
    step i whose trailing mean over the last `window` steps (full windows only: i >= window - 1)
    is >= target; NaN if it never did. With each run's cumulative FLOPs per step (the online
    history's "flops"), the ratio of two runs' `compute_to_reach` at one target is the compute
    ratio at matched accuracy (Thinking Machines: on-policy distillation reaches RL's accuracy at
    about a tenth of RL's compute)."""
    if len(flops) != len(accuracy):
        raise ValueError(f"flops ({len(flops)}) and accuracy ({len(accuracy)}) must have one value per step")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    for i in range(window - 1, len(accuracy)):
        if sum(accuracy[i - window + 1:i + 1]) / window >= target:
            return float(flops[i])
    return math.nan


def support_overlap(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor,
                    token_ids: torch.Tensor, mask: torch.Tensor, *, k: int = 8) -> dict[str, float]:
    """How well a teacher covers the tokens a student samples, per sampled position.

    Args:
        student_logprobs, teacher_logprobs: (B, T, V) token-aligned next-token log-distributions
            (`kl.token_log_softmax`: row t is the distribution that produced token t).
        token_ids: (B, T) the sampled tokens.
        mask: (B, T) 1 on the completion tokens that count.
        k: the teacher's top-k for `in_topk`.

    Returns floats, each a mean over the masked positions:
        reverse_kl:        KL(p_S || p_T) over the full vocabulary (what OPD starts from);
        teacher_logprob:   log p_T of the token the student sampled;
        student_logprob:   log p_S of it (for scale);
        in_topk:           fraction of sampled tokens among the teacher's k most likely.
    """
    if student_logprobs.shape != teacher_logprobs.shape:
        raise ValueError(f"student {tuple(student_logprobs.shape)} and teacher {tuple(teacher_logprobs.shape)} "
                         "distributions differ in shape: teacher and student must share one tokenizer")
    if token_ids.shape != student_logprobs.shape[:2] or mask.shape != token_ids.shape:
        raise ValueError(f"token_ids {tuple(token_ids.shape)} and mask {tuple(mask.shape)} must be (B, T) = "
                         f"{tuple(student_logprobs.shape[:2])}")
    s, t = student_logprobs.float(), teacher_logprobs.float()
    m = mask.float()
    kl = (s.exp() * (s - t)).sum(-1)
    ids = token_ids.long()[..., None]
    t_tok, s_tok = t.gather(-1, ids).squeeze(-1), s.gather(-1, ids).squeeze(-1)
    top = t.topk(min(k, t.shape[-1]), dim=-1).indices
    inside = (top == ids).any(-1).float()
    return {name: float(masked_mean(x, m)) for name, x in
            (("reverse_kl", kl), ("teacher_logprob", t_tok), ("student_logprob", s_tok), ("in_topk", inside))}


def scored_samples(student, teacher, tokenizer, examples: Sequence, *, max_new_tokens: int, samples: int = 1,
                   temperature: float = 1.0, seed: int = 0, batch_size: int = 64):
    """Per batch of `examples`: the student's own samples (T = `temperature`) and both models'
    next-token log-distributions on their completion window, as (ids, mask, student, teacher):
    ids and mask (B, L+1), the distributions (B, L+1, V), token-aligned (row t produced token
    t), without gradient. What `support_overlap` and `disagreements` read."""
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        with torch.no_grad():
            ro = generate(student, tokenizer, [e.prompt for e in chunk], num_samples=samples,
                          max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + i)
            W = ro.prompt_length - 1
            s_logits, _ = window_forward(student, ro.input_ids, ro.attention_mask, ro.prompt_length, ro.prompt_index)
            t_logits, _ = window_forward(teacher, ro.input_ids, ro.attention_mask, ro.prompt_length, ro.prompt_index)
        yield ro.input_ids[:, W:], ro.completion_mask[:, W:], token_log_softmax(s_logits), token_log_softmax(t_logits)


@torch.no_grad()
def measure_overlap(student, teacher, tokenizer, examples: Sequence, *, max_new_tokens: int,
                    samples: int = 1, k: int = 8, temperature: float = 1.0, seed: int = 0,
                    batch_size: int = 64) -> dict[str, float]:
    """`support_overlap` of `teacher` on the student's own samples (T = `temperature`) for the
    prompts of `examples`: what on-policy distillation from this teacher starts from."""
    totals: dict[str, float] = {}
    count = 0
    for ids, mask, s, t in scored_samples(student, teacher, tokenizer, examples, max_new_tokens=max_new_tokens,
                                           samples=samples, temperature=temperature, seed=seed,
                                           batch_size=batch_size):
        part = support_overlap(s, t, ids, mask, k=k)
        n = float(mask.sum())
        for key, value in part.items():
            totals[key] = totals.get(key, 0.0) + value * n
        count += n
    if not count:
        return {key: math.nan for key in ("reverse_kl", "teacher_logprob", "student_logprob", "in_topk")}
    return {key: value / count for key, value in totals.items()}


@torch.no_grad()
def disagreements(student, teacher, tokenizer, examples: Sequence, *, max_new_tokens: int,
                  threshold: float = -2.0, temperature: float = 1.0, seed: int = 0) -> list[str]:
    """The student's samples for `examples` (one each), as text with every token the teacher
    gives a log-prob below `threshold` marked `[token|S log p_S T log p_T -> teacher's choice]`:
    where on-policy distillation's signal is, and what it says."""
    lines = []
    for ids, mask, s, t in scored_samples(student, teacher, tokenizer, examples, max_new_tokens=max_new_tokens,
                                           samples=1, temperature=temperature, seed=seed, batch_size=64):
        for row in range(ids.shape[0]):
            parts = []
            for pos in mask[row].nonzero().flatten().tolist():
                y = int(ids[row, pos])
                text = tokenizer.decode([y])
                lt = float(t[row, pos, y])
                if lt < threshold:
                    best = tokenizer.decode([int(t[row, pos].argmax())])
                    text = f"[{text}|S {float(s[row, pos, y]):.1f} T {lt:.1f} -> {best}]"
                parts.append(text)
            lines.append("".join(parts))
    return lines
