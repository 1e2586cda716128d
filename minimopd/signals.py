"""Signals: what the online loop learns from, computed once per rollout batch on the student's
own samples.

Which signal a stage uses is what tells the methods of the lineage apart; the loop in
`stages/online.py` is the same for all of them:

    VerifierSignal        RLVR, R1: a program checks each completion (reward per sequence)
    RewardModelSignal     RLHF / PPO: a learned reward model scores each completion
    TeacherSignal         on-policy distillation: a teacher's log-probs on the student's tokens
    RoutedTeacherSignal   MOPD: each row goes to the teacher of its prompt's domain

A signal is anything that meets the `Signal` protocol: `signal(rollout, examples) ->
SignalOutput`, where `examples[i]` is the task item that produced row i. The built-in signals
also have `spec()` (what the stage cache records, so a teacher run never reuses a verifier
run), `setup(model, tokenizer, device)` (checks that the signal's models fit the student before
training starts) and `rollout_topk` (> 0 when the sampler must record the student's top-k ids);
the loop uses them when present, so a plain function is a signal too.
Signals own where their models live: `placement="device"` keeps a model on the training
device, `"swap"` parks it on the CPU and moves it to the device only while it scores its rows
(memory bounded by the largest teacher).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F

from .engine import window_forward
from .kl import token_log_softmax
from .losses import token_logprobs
from .models import count_parameters, unwrap
from .rewards import accuracy_reward
from .tasks import format_ok
from .tokenizer import check_compatible

TEACHER_MODES = ("sampled", "topk", "full")
PLACEMENTS = ("device", "swap")


@dataclass
class SignalOutput:
    """What a signal hands the loop. Per-token tensors are token-aligned with the rollout."""
    rewards: torch.Tensor                       # (N,) sequence-level reward per rollout row
    scores: torch.Tensor                        # (N,) task score (accuracy), for logging
    kind: str = "verifier"                      # "verifier" | "reward_model" | "teacher"
    teacher_logprobs: torch.Tensor | None = None   # (N, T) log p_T(y_t) of the sampled tokens
    support_ids: torch.Tensor | None = None        # (N, T, k) top-k support (mode "topk")
    support_logprobs: torch.Tensor | None = None   # (N, T, k) teacher log-probs on that support
    full_logprobs: torch.Tensor | None = None      # (N, T, V) teacher log-distribution ("full")
    teacher_ids: list[str] | None = None           # N names: which teacher scored each row
    row_weights: torch.Tensor | None = None        # (N,) weight of each row's teacher term (MOPD's
                                                   # per-domain weights); None: all 1
    forward_tokens: int = 0                     # tokens pushed through the signal's own models
    flops: float = 0.0                          # their compute (2 x params x tokens, per model)
    metrics: dict = field(default_factory=dict)


@runtime_checkable
class Signal(Protocol):
    rollout_topk: int       # > 0: the sampler must record the student's top-k ids (Rollout.topk_ids)

    def __call__(self, rollout, examples: Sequence) -> SignalOutput: ...

    def spec(self) -> dict: ...

    def setup(self, model, tokenizer, device) -> None: ...


def model_key(model) -> str:
    """A short digest of a model's weights: names a teacher or reward model in cache keys when
    no artifact key is given."""
    h = hashlib.sha256()
    for name, p in sorted(unwrap(model).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def placed(model, device, placement: str):
    """Run a block with `model` on `device`; with "swap", park it back on the CPU afterwards."""
    model.to(device)
    try:
        yield model
    finally:
        if placement == "swap":
            model.to("cpu")


def _check_rows(rollout, examples) -> None:
    if len(examples) != len(rollout):
        raise ValueError(f"signal got {len(examples)} examples for {len(rollout)} rollout rows")


class VerifierSignal:
    """RLVR: a rule-based reward per completion, `reward_fn(example, completion) -> float`.

    Defaults to the task's own verifier (`accuracy_reward`). Rewards are checked: a NaN, an
    infinity or a non-number stops training with the offending prompt and completion named.
    """
    rollout_topk = 0

    def __init__(self, reward_fn: Callable | None = None):
        self.reward_fn = reward_fn or accuracy_reward
        self.name = getattr(self.reward_fn, "__name__", "reward")

    def spec(self) -> dict:
        return {"kind": "verifier", "reward": self.name}

    def setup(self, model, tokenizer, device) -> None:
        pass

    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        _check_rows(rollout, examples)
        rewards, scores = [], []
        for i, (ex, text) in enumerate(zip(examples, rollout.texts)):
            value = self.reward_fn(ex, text)
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(f"reward function {self.name} returned a tensor of shape "
                                     f"{tuple(value.shape)} for row {i}; it must return one float")
                value = value.item()
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"reward function {self.name} returned {type(value).__name__} for "
                                f"row {i}; it must return a float")
            if not math.isfinite(value):
                raise ValueError(f"reward function {self.name} returned {value} for prompt "
                                 f"{ex.prompt!r} and completion {text!r}; rewards must be finite")
            rewards.append(float(value))
            scores.append(accuracy_reward(ex, text) if ex.answer else float(value))
        device = rollout.input_ids.device
        fmt = sum(format_ok(t) and bool(f) for t, f in zip(rollout.texts, rollout.finished.tolist()))
        return SignalOutput(rewards=torch.tensor(rewards, device=device),
                            scores=torch.tensor(scores, device=device),
                            metrics={"format_rate": fmt / max(len(rollout), 1)})


class RewardModelSignal:
    """RLHF: a `models.RewardModel` scores each completion at its last real token.

    The reward model reads the rollout's own token ids, so it must share the student's
    tokenizer (checked in `setup`). `scores` (logged as accuracy) stay the task's own score,
    the hidden gold scorer for the preference domain: the reward model never sees it."""
    rollout_topk = 0

    def __init__(self, reward_model, *, key: str | None = None, placement: str = "device"):
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        if not hasattr(reward_model, "set_normalisation"):
            raise TypeError(f"RewardModelSignal needs a minimopd.models.RewardModel (a scalar head on "
                            f"a causal LM), got {type(reward_model).__name__}")
        self.model, self.placement = reward_model.eval(), placement
        self.key = key
        self.verifier = VerifierSignal()
        self.n_params = count_parameters(reward_model)

    def spec(self) -> dict:
        return {"kind": "reward_model", "model": self.key or model_key(self.model)}

    def setup(self, model, tokenizer, device) -> None:
        check_compatible(tokenizer, self.model, role="reward model")
        self.device = device

    @torch.no_grad()
    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        _check_rows(rollout, examples)
        out = self.verifier(rollout, examples)
        device = rollout.input_ids.device
        with placed(self.model, device, self.placement):
            rewards = self.model(rollout.input_ids, rollout.attention_mask).float()
        bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(f"the reward model's head returned {rewards[bad[0]].item()} for rows "
                                     f"{bad[:5]} (prompt {examples[bad[0]].prompt!r}); retrain it with a lower "
                                     "learning rate or check its checkpoint")
        tokens = int(rollout.attention_mask.sum())
        return replace(out, rewards=rewards.to(device), kind="reward_model", forward_tokens=tokens,
                       flops=2.0 * self.n_params * tokens)


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
        0 on prompt columns. Only the completion window is computed (`engine.window_forward`:
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
        _check_rows(rollout, examples)
        out = self.verifier(rollout, examples)
        tensors = self.score(rollout.input_ids, rollout.attention_mask, rollout.prompt_length,
                             rollout.prompt_index, rollout.topk_ids)
        tokens = int(rollout.attention_mask.sum())
        return replace(out, kind="teacher", forward_tokens=tokens, flops=2.0 * self.n_params * tokens,
                       **tensors)


def route_of(example) -> str:
    """The teacher a row goes to: `example.meta["teacher_id"]` when set (a prompt that names its teacher),
    else the example's domain."""
    return example.meta.get("teacher_id", example.domain)


def route_rows(names: Sequence[str], teachers) -> dict[str, list[int]]:
    """MOPD's router: which rows each teacher scores.

    names:    N teacher names, one per rollout row (`route_of` of its example)
    teachers: the names of the teachers there are (any collection of str)
    Returns:  {teacher: its row indices, increasing} for every teacher with at least one row.
    A row whose teacher is missing is a KeyError naming it, its rows and the teachers there are:
    never a row scored by the wrong teacher or left unscored."""
    teachers = set(teachers)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name not in teachers:
            rows = [j for j, n in enumerate(names) if n == name][:5]
            raise KeyError(f"no teacher for domain {name!r} (rows {rows}); the teachers are "
                           f"{', '.join(sorted(teachers))}. Add a TeacherSignal for it or "
                           "sample only domains that have one.")
        groups.setdefault(name, []).append(i)
    return groups


def _misrouted(groups: Mapping[str, Sequence[int]], names: Sequence[str]) -> str:
    """What is wrong with a router's `groups` for rows named `names`: the first misplaced row."""
    seen: dict[int, str] = {}
    for name, idx in groups.items():
        for i in idx:
            if not 0 <= i < len(names):
                return f"misplaced row {i}: it is not a row of this batch"
            if i in seen:
                return f"misplaced row {i}: it was routed twice ({seen[i]!r} and {name!r})"
            if names[i] != name:
                return f"misplaced row {i}: it belongs to {names[i]!r}, not {name!r}"
            seen[i] = name
    return f"left rows {[i for i in range(len(names)) if i not in seen][:5]} without a teacher"


class RoutedTeacherSignal:
    """MOPD: every row is scored by the teacher of its prompt's domain (or `teacher_id`).

    Rows are grouped by teacher (`router`, default `route_rows`), each teacher runs once on its
    own rows, and the results are scattered back into one `SignalOutput`; compute is counted with
    each teacher's own parameter count. All teachers share one mode (and k / support for "topk").

    `weights` ({teacher: w >= 0}, 1 for a teacher not named): each row's teacher term is scaled
    by its teacher's weight (`SignalOutput.row_weights`): the sampled-token advantage in the
    `teacher_token` estimator, the divergence in the `reverse_kl` and `jsd` objectives. A domain
    the student already masters can be given less weight, one it lags on more."""

    def __init__(self, teachers: Mapping[str, TeacherSignal], *, weights: Mapping[str, float] | None = None,
                 outcome: Callable | None = None, router: Callable | None = None):
        if not teachers:
            raise ValueError("RoutedTeacherSignal needs at least one teacher: {domain: TeacherSignal}")
        bad = [name for name, t in teachers.items() if not isinstance(t, TeacherSignal)]
        if bad:
            raise TypeError(f"teachers {bad} are not TeacherSignal objects; wrap each model as "
                            "TeacherSignal(model, mode=...)")
        shapes = {(t.mode, t.k if t.mode == "topk" else 0, t.support if t.mode == "topk" else "")
                  for t in teachers.values()}
        if len(shapes) > 1:
            raise ValueError(f"routed teachers must share one mode (and k, support for 'topk'); got {sorted(shapes)}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(teachers))
        if unknown:
            raise ValueError(f"weights name {unknown}, which have no teacher; the teachers are "
                             f"{', '.join(sorted(teachers))}")
        wrong = {k: w for k, w in weights.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
        if wrong:
            raise ValueError(f"per-domain weights must be finite numbers >= 0, got {wrong}")
        self.teachers = dict(teachers)
        self.weights = {k: float(w) for k, w in weights.items() if float(w) != 1.0}
        self.mode = next(iter(self.teachers.values())).mode
        self.verifier = VerifierSignal(outcome)
        self.router = router or route_rows

    @property
    def rollout_topk(self) -> int:
        return max(t.rollout_topk for t in self.teachers.values())

    def spec(self) -> dict:
        spec = {"kind": "routed_teachers", "outcome": self.verifier.name,
                "teachers": {name: t.spec() for name, t in sorted(self.teachers.items())}}
        if self.weights:     # (the router is not part of it: `routes` admits only the one grouping)
            spec["weights"] = dict(sorted(self.weights.items()))
        return spec

    def setup(self, model, tokenizer, device) -> None:
        for t in self.teachers.values():
            t.setup(model, tokenizer, device)

    def routes(self, examples: Sequence) -> dict[str, list[int]]:
        """{teacher: its rows} for these examples (`route_rows`: a clear error for a row whose
        teacher is missing). A custom router must return the same grouping, rows in any order;
        otherwise the error names the first row it misplaced."""
        names = [route_of(ex) for ex in examples]
        groups = route_rows(names, self.teachers)
        if self.router is not route_rows:
            got = self.router(names, tuple(self.teachers))
            if {name: sorted(idx) for name, idx in got.items() if idx} != groups:
                router = getattr(self.router, "__name__", type(self.router).__name__)
                raise ValueError(f"the router {router!r} {_misrouted(got, names)}. A router returns "
                                 "{teacher: [rows]} with every row exactly once, under its own domain's teacher")
        return groups

    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        _check_rows(rollout, examples)
        groups = self.routes(examples)
        out = self.verifier(rollout, examples)
        merged: dict[str, torch.Tensor] = {}
        tokens, flops, metrics = 0, 0.0, {}
        device = rollout.input_ids.device
        names = [""] * len(rollout)
        for name in sorted(groups):
            teacher = self.teachers[name]
            idx = torch.tensor(groups[name], device=device)
            for i in groups[name]:
                names[i] = name
            topk = None if rollout.topk_ids is None else rollout.topk_ids[idx]
            part = teacher.score(rollout.input_ids[idx], rollout.attention_mask[idx], rollout.prompt_length,
                                 rollout.prompt_index[idx], topk)
            for key, value in part.items():
                if key not in merged:
                    merged[key] = value.new_zeros((len(rollout),) + tuple(value.shape[1:]))
                merged[key][idx] = value
            n_tok = int(rollout.attention_mask[idx].sum())
            tokens += n_tok
            flops += 2.0 * teacher.n_params * n_tok
            metrics[f"rows/{name}"] = len(idx)
        row_weights = None
        if self.weights:
            row_weights = torch.tensor([self.weights.get(n, 1.0) for n in names], device=device,
                                       dtype=out.rewards.dtype)
        return replace(out, kind="teacher", teacher_ids=names, forward_tokens=tokens, flops=flops,
                       row_weights=row_weights, metrics={**out.metrics, **metrics}, **merged)
