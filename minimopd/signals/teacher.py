"""On-policy distillation's signal: one teacher's log-probs on the student's own samples."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..decoder import window_forward
from ..kl import token_log_softmax
from ..losses import token_logprobs
from ..models import count_parameters, unwrap
from ..tokenizer import check_compatible
from .base import PLACEMENTS, TEACHER_MODES, SignalOutput, check_rows, model_key, placed
from .outcome import VerifierSignal


class TeacherSignal:
    """On-policy distillation: one teacher scores the student's own samples.

    mode "sampled": the teacher's log-prob of every sampled token (`teacher_logprobs`); the
                    `teacher_token` estimator turns it into log p_T - log p_S.
    mode "topk":    also the teacher's full-vocabulary log-probs on a k-token support at every
                    position (`support_ids`, `support_logprobs`): the student's top-k recorded
                    by the sampler (`support="student"`) or the teacher's own top-k.
    mode "full":    also the teacher's whole next-token log-distribution (`full_logprobs`).

    The rewards and scores are the task verifier's (`outcome`), for logging and for the
    optional outcome advantage. The teacher runs once per rollout batch, in eval mode, without
    gradient; it must share the student's tokenizer and dtype (checked in `setup`)."""

    def __init__(self, teacher, mode: str = "sampled", *, k: int = 8, support: str = "student",
                 placement: str = "device", key: str | None = None, outcome: Callable | None = None):
        if mode not in TEACHER_MODES:
            raise ValueError(f"unknown teacher mode {mode!r}; choose one of {', '.join(TEACHER_MODES)}")
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        if support not in ("student", "teacher"):
            raise ValueError(f"support must be 'student' or 'teacher', got {support!r}")
        if mode == "topk" and k < 1:
            raise ValueError(f"mode='topk' needs k >= 1, got {k}")
        self.teacher = unwrap(teacher).eval()   # scored under no_grad; its flags stay the caller's
        self.mode, self.k, self.support, self.placement, self.key = mode, k, support, placement, key
        self.verifier = VerifierSignal(outcome)
        self.n_params = count_parameters(self.teacher)

    @property
    def rollout_topk(self) -> int:
        return self.k if self.mode == "topk" and self.support == "student" else 0

    def spec(self) -> dict:
        spec = {"kind": "teacher", "mode": self.mode, "teacher": self.key or model_key(self.teacher),
                "outcome": self.verifier.name}
        if self.mode == "topk":
            spec.update(k=self.k, support=self.support)
        return spec

    def setup(self, model, tokenizer, device) -> None:
        check_compatible(tokenizer, self.teacher, role="teacher")
        student = unwrap(model)
        s_vocab = student.get_input_embeddings().weight.shape[0]
        t_vocab = self.teacher.get_input_embeddings().weight.shape[0]
        if s_vocab != t_vocab:
            raise ValueError(f"the teacher has {t_vocab} logits per position and the student {s_vocab}: "
                             "teacher and student must share one tokenizer (same vocabulary, same ids)")
        s_dtype, t_dtype = next(student.parameters()).dtype, next(self.teacher.parameters()).dtype
        if s_dtype != t_dtype:
            raise ValueError(f"the teacher is {t_dtype} and the student {s_dtype}: cast the teacher "
                             f"(teacher.to({s_dtype})) so both distributions have the same precision")

    def check_length(self, width: int) -> None:
        context = getattr(self.teacher.config, "max_position_embeddings", None)
        if context is not None and width > context:
            raise ValueError(f"rollouts are {width} tokens wide but the teacher's context is {context}: "
                             "lower max_new_tokens or use a teacher with a longer context")

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
              prompt_index: torch.Tensor | None = None, topk_ids: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
        """The teacher's tensors for these rollout rows (see the class docstring), full width,
        0 on prompt columns. Only the completion window is computed (`decoder.window_forward`:
        each prompt once for all its samples)."""
        self.check_length(input_ids.shape[1])
        W = prompt_length - 1
        with placed(self.teacher, input_ids.device, self.placement):
            logits, _ = window_forward(self.teacher, input_ids, attention_mask, prompt_length, prompt_index)
        logits, ids = logits.to(input_ids.device), input_ids[:, W:]
        if self.mode == "sampled":
            return {"teacher_logprobs": F.pad(token_logprobs(logits, ids), (W, 0))}
        full = token_log_softmax(logits)                                    # (B, L+1, V)
        out = {"teacher_logprobs": F.pad(full.gather(-1, ids[..., None]).squeeze(-1), (W, 0))}
        if self.mode == "full":
            out["full_logprobs"] = F.pad(full, (0, 0, W, 0))
            return out
        if self.support == "student":
            if topk_ids is None:
                raise ValueError("a top-k teacher with support='student' needs the student's top-k "
                                 f"ids: sample with generate(..., topk={self.k})")
            support = topk_ids[:, W:].long()
        else:
            support = full.topk(min(self.k, full.shape[-1]), dim=-1).indices
        out["support_ids"] = F.pad(support, (0, 0, W, 0))
        out["support_logprobs"] = F.pad(full.gather(-1, support), (0, 0, W, 0))
        return out

    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        check_rows(rollout, examples)
        out = self.verifier(rollout, examples)
        tensors = self.score(rollout.input_ids, rollout.attention_mask, rollout.prompt_length,
                             rollout.prompt_index, rollout.topk_ids)
        tokens = int(rollout.attention_mask.sum())
        return replace(out, kind="teacher", forward_tokens=tokens, flops=2.0 * self.n_params * tokens,
                       **tensors)
