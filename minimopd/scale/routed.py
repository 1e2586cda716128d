"""Routed multi-teacher on-policy distillation (MOPD) on trl's `DistillationTrainer`.

trl's trainer distills from one teacher. This subclass keeps trl's engine (its sampler, batching,
gradient accumulation, `accelerate` data parallelism, checkpointing, logging) and changes two
things:

1. a `teacher_id` dataset column routes every row to its teacher (`signals.routed.route_rows`,
   the router of minimopd's own `RoutedTeacherSignal`), and each teacher runs once per batch on
   its own rows; with `placement="swap"` a teacher sits on the CPU and is moved to the device
   only for its rows, so device memory holds the largest teacher, not their sum (host memory
   holds every teacher, once per process);
2. the per-token loss is minimopd's, computed by the same pure functions its online loop uses:

   mode "full"     exact full-vocabulary reverse KL(p_S || p_T) at every completion position
                   (`losses.token_reverse_kl`; DeepSeek V4), the `reverse_kl` objective;
   mode "sampled"  the clipped policy gradient with the per-token advantage log p_T - log p_S
                   of the sampled token (`losses.opd_advantages`, `losses.ppo_clip_loss`;
                   Thinking Machines, Nemotron 3 Ultra), the `teacher_token` estimator with
                   the `clipped_pg` objective.

   Reduced as trl reduces its own divergence: the sum over completion tokens divided by the
   tokens of the whole (global, accumulated) batch, i.e. minimopd's "dapo" aggregation.

Positions skip left padding (`models.position_ids_from_mask`), as the sampler's do, so a row's
log-probs do not depend on how its batch was padded. Differences from trl's own divergence: the
sampling temperature divides the student's logits only (minimopd's convention: the teacher is
scored as it is; trl tempers both; the two agree at T = 1, which every profile uses), and the
vocabulary-sized tensors are built whole, not in chunks (fine for minimopd's 105-token
vocabulary; a 150k-token vocabulary wants trl's chunked kernel). Models whose logits are scaled
or soft-capped in the forward pass (`logit_scale`, `final_logit_softcapping`) are refused.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from trl import DistillationConfig, DistillationTrainer

from .. import losses
from ..decoder import window_forward
from ..signals.routed import route_rows, score_groups
from ..signals.teacher import TeacherSignal

MODES = ("full", "sampled")


def teacher_signals(teachers: Mapping[str, torch.nn.Module], student, tokenizer, *, mode: str = "full",
                    placement: str = "device") -> dict[str, TeacherSignal]:
    """Each teacher wrapped as minimopd's `TeacherSignal` (the scorer of the online loop), after its
    checks (`TeacherSignal.setup`: same tokenizer, vocabulary and dtype as the student), with the
    teacher's name in any error; also refused: no teacher, no tokenizer, scaled or capped logits."""
    if not teachers:
        raise ValueError("routed distillation needs at least one teacher: {teacher_id: model}")
    if tokenizer is None:
        raise ValueError("pass the student's tokenizer as processing_class (minimopd.load_model returns it)")
    for name, model in {"the student": student, **{f"teacher {n!r}": t for n, t in teachers.items()}}.items():
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        scaled = {k: getattr(cfg, k, None) for k in ("logit_scale", "final_logit_softcapping")}
        if any(v not in (None, 1, 1.0) for v in scaled.values()):
            raise ValueError(f"{name} scales or caps its logits ({scaled}); the routed losses read the "
                             "raw lm_head output: use trl's DistillationTrainer for such models")
    signals = {}
    for name, teacher in teachers.items():
        signals[name] = TeacherSignal(teacher, mode=mode, placement=placement, key=name)
        try:
            signals[name].setup(student, tokenizer, None)
        except ValueError as err:
            raise ValueError(f"teacher {name!r}: {err}") from None
    return signals


def check_routes(teacher_ids: Sequence[str], teachers) -> None:
    """Every row's teacher exists: a missing one is named with its first rows and the teachers
    there are (`route_rows`' KeyError, raised as a ValueError before any training)."""
    try:
        route_rows(list(teacher_ids), teachers)
    except KeyError as err:
        raise ValueError(f"dataset column 'teacher_id': {err.args[0]}") from None


def teacher_tensors(signals: Mapping[str, TeacherSignal], teacher_ids: Sequence[str], input_ids, attention_mask,
                    prompt_length: int) -> torch.Tensor:
    """What the routed teachers say about a batch's completion window, W = prompt_length - 1,
    token-aligned like every teacher tensor of minimopd (column j is about window token j; column 0,
    the prompt's last token, is masked out by every loss):
    mode "full": (B, T-W, V) each row's teacher log-distribution predicting each window token;
    mode "sampled": (B, T-W) each row's teacher log-prob of the window's tokens.
    Rows are grouped by teacher (`route_rows`); each teacher scores its own rows once with
    `TeacherSignal.score` (no gradient, the batch's device, its placement, its context check),
    by the loop `RoutedTeacherSignal` uses (`signals.routed.score_groups`)."""
    merged, _ = score_groups(signals, route_rows(list(teacher_ids), signals), input_ids, attention_mask, prompt_length)
    mode = next(iter(signals.values())).mode
    return merged["full_logprobs" if mode == "full" else "teacher_logprobs"][:, prompt_length - 1:]


def routed_token_loss(student_logits: torch.Tensor, window_ids: torch.Tensor, teacher: torch.Tensor, *,
                      mode: str, mask: torch.Tensor, eps_low: float = 0.2, eps_high: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token MOPD loss on a completion window and its per-token reverse-KL estimate.

    student_logits: (B, L, V) the student's window logits (column j predicts window token j+1)
    window_ids:     (B, L) the window's tokens (column 0: the prompt's last token)
    teacher:        `teacher_tensors` of the same rows: (B, L, V) for "full", (B, L) for "sampled"
    mask:           (B, L) 1 on completion tokens
    Returns (loss (B, L), kl (B, L)), token-aligned, unreduced: "full" gives the exact reverse KL
    as both; "sampled" the clipped policy-gradient loss with A = log p_T - log p_S (on-policy: the
    ratio is 1, the gradient -A grad log p_S) and its single-sample KL estimate -A."""
    if mode == "full":
        kl = losses.token_reverse_kl(student_logits, mode="full", teacher_full_logprobs=teacher)
        return kl, kl.detach()
    if mode != "sampled":
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    logprobs = losses.token_logprobs(student_logits, window_ids)
    adv = losses.opd_advantages(logprobs, teacher, mask)
    loss, _ = losses.ppo_clip_loss(logprobs, logprobs.detach(), adv, eps_low, eps_high)
    return loss, -adv


class RoutedDistillationTrainer(DistillationTrainer):
    """trl's `DistillationTrainer` with one teacher per `teacher_id` (see the module docstring).

    teachers:  {teacher_id: causal LM}, sharing the student's tokenizer and dtype
    mode:      "full" (exact reverse KL) or "sampled" (sampled-token advantage)
    weights:   {teacher_id: w >= 0}: each row's loss times its teacher's weight (default 1)
    placement: "swap" parks teachers on the CPU between their rows (memory bounded by the
               largest teacher); "device" keeps them all on the training device
    The dataset needs a `prompt` and a `teacher_id` column (`scale.data.task_dataset`)."""

    def __init__(self, model, teachers: Mapping[str, torch.nn.Module], args: DistillationConfig | None = None,
                 train_dataset=None, processing_class=None, *, mode: str = "full",
                 weights: Mapping[str, float] | None = None, placement: str = "swap",
                 eps_low: float = 0.2, eps_high: float | None = None, **kwargs):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if train_dataset is None or "teacher_id" not in (getattr(train_dataset, "column_names", None) or []):
            raise ValueError("routed distillation needs a datasets.Dataset with a 'teacher_id' column naming "
                             "each row's teacher (minimopd.scale.task_dataset writes one)")
        if isinstance(model, str):
            raise TypeError("pass the student as a model (minimopd.load_model(path)[0]), not a path")
        self.signals = teacher_signals(teachers, model, processing_class, mode=mode, placement=placement)
        check_routes(train_dataset["teacher_id"], teachers)
        evals = kwargs.get("eval_dataset")
        for data in (evals.values() if isinstance(evals, dict) else [evals] if evals is not None else []):
            check_routes(data["teacher_id"], teachers)
        weights = dict(weights or {})
        bad = {k: w for k, w in weights.items() if k not in teachers or not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights {bad}: each must name a teacher ({', '.join(sorted(teachers))}) "
                             "and be a finite number >= 0")
        for t in teachers.values():
            t.requires_grad_(False)
        self.mode, self.weights = mode, weights
        self.eps_low, self.eps_high = eps_low, eps_high
        super().__init__(model=model, teacher_model=None, args=args, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt", "teacher_id"]

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["teacher_id"] = [x["teacher_id"] for x in inputs]
        return output

    def routed_loss(self, student, inputs) -> dict[str, torch.Tensor]:
        """The per-token quantities of a generated batch's completion window (`inputs` as
        `_generate_and_score_completions` returns it), all (B, L): "loss" (weighted by each row's
        teacher weight), "kl" (its reverse-KL estimate), "entropy" (the student's), "mask"."""
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        P = prompt_ids.shape[1]
        mask = F.pad(inputs["completion_mask"].float(), (1, 0))          # window column 0: prompt
        if "tool_mask" in inputs:
            mask = mask * F.pad(inputs["tool_mask"].float(), (1, 0))
        logits, _ = window_forward(student, input_ids, attention_mask, P)
        if self.temperature not in (0, 1):
            logits = logits / self.temperature   # the distribution that sampled the tokens
        teacher = teacher_tensors(self.signals, inputs["teacher_id"], input_ids, attention_mask, P)
        per_token, kl = routed_token_loss(logits, input_ids[:, P - 1:], teacher, mode=self.mode, mask=mask,
                                          eps_low=self.eps_low, eps_high=self.eps_high)
        if self.weights:
            w = torch.tensor([self.weights.get(t, 1.0) for t in inputs["teacher_id"]], device=per_token.device)
            per_token = per_token * w[:, None].to(per_token.dtype)
        with torch.no_grad():
            entropy = losses.token_entropy(logits)
        return {"loss": per_token, "kl": kl, "entropy": entropy, "mask": mask}

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        """trl's contract: (loss, entropy sum, valid tokens) of the local batch; the loss is the
        token sum over `num_items_in_batch` (the global batch's tokens per process) when given,
        else the local token mean."""
        out = self.routed_loss(unwrapped_student, inputs)
        mask = out["mask"]
        n_valid = mask.sum()
        denominator = num_items_in_batch if num_items_in_batch is not None else n_valid.clamp(min=1)
        loss = losses.masked_sum(out["loss"], mask) / denominator
        self._kl_sums = (losses.masked_sum(out["kl"], mask).detach(), n_valid.detach())
        return loss, losses.masked_sum(out["entropy"], mask).detach(), n_valid

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """trl's, plus the reverse KL of the whole batch (summed over processes, as trl logs the
        entropy: gathered here, outside the wrapped forward)."""
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        kl_sum, n = (self.accelerator.gather_for_metrics(x.reshape(1)).sum() for x in self._kl_sums)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["reverse_kl"].append((kl_sum / n).item() if n > 0 else 0.0)
        return result
