"""Diagnosis: what a model can and cannot do, per domain and level, before and after a stage.

Greedy accuracy says what a model does by default; it does not say whether RL can change it.
RL learns only from prompts whose samples disagree (some right, some wrong): a prompt solved by
every sample or by none gives every sample the same reward, hence zero advantage. So for each
domain and difficulty this measures, on held-out items:

* `greedy`: accuracy of greedy decoding (what `evaluate` reports);
* `t1`: mean accuracy of samples at temperature 1 (what RL's reward averages);
* `pass@k`: the chance that at least one of k samples is right (unbiased estimator of Chen et
  al. 2021 from n >= k samples per prompt), for k = 1, 2, 4, ..., n;
* `learnable`: the fraction of prompts with 0 < (right samples) < n, the prompts that carry a
  gradient in a group of n;
* `solved` / `unreachable`: the fractions with all n right / none right;
* `entropy`: mean per-token entropy of the model on its own samples (nats);
* `length`: mean completion length of the samples (tokens).

A researcher uses it to pick RL prompts (`learnable_examples`) and the course uses it to show
what RL does: it raises t1 and pass@1 towards pass@k (sharpening) and, as Yue et al. (2025)
report for LLMs, rarely raises pass@k at large k.

    minimopd diagnose --stage sft_reasoning            # the cached model of the default profile
    minimopd diagnose --model path/to/model --samples 16
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from . import losses
from .decoder import window_forward
from .evaluation import evaluate
from .models import count_parameters
from .profiles import Profile, get_profile
from .rollout import generate
from .tasks import DIFFICULTIES, VERIFIABLE_DOMAINS, get_task
from .threads import model_threads


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n (and n itself)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


@dataclass
class Diagnosis:
    rows: list[dict]                      # one per (domain, difficulty)
    samples_per_prompt: int
    meta: dict = field(default_factory=dict)

    def row(self, domain: str, difficulty: str) -> dict:
        return next(r for r in self.rows if r["domain"] == domain and r["difficulty"] == difficulty)

    def table(self) -> str:
        """Text table: one line per domain and level."""
        n = self.samples_per_prompt
        head = (f"{'domain':<9}{'level':<8}{'greedy':>7}{'T=1':>7}{'pass@' + str(n):>8}{'learn':>7}"
                f"{'solved':>7}{'unreach':>8}{'entropy':>8}{'len':>6}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['domain']:<9}{r['difficulty']:<8}{r['greedy']:>7.3f}{r['t1']:>7.3f}"
                         f"{r['pass@k'][n]:>8.3f}{r['learnable']:>7.3f}{r['solved']:>7.3f}"
                         f"{r['unreachable']:>8.3f}{r['entropy']:>8.3f}{r['length']:>6.1f}")
        return "\n".join(lines)

    def summary(self) -> dict[str, float]:
        """Flat metrics (`greedy/<domain>/<level>`, `t1/...`, `pass@<k>/...`, `learnable/...`)."""
        out = {}
        for r in self.rows:
            key = f"{r['domain']}/{r['difficulty']}"
            for name in ("greedy", "t1", "learnable", "solved", "unreachable", "entropy", "length"):
                out[f"{name}/{key}"] = r[name]
            for k, v in r["pass@k"].items():
                out[f"pass@{k}/{key}"] = v
        return out


@torch.no_grad()
@model_threads
def diagnose(model, tokenizer, tasks=None, *, profile: Profile | str | None = None,
             n_per_level: int | None = None, samples: int = 8, difficulties=DIFFICULTIES,
             reasoning: bool = False, chat: bool = True, max_new_tokens: int | None = None,
             temperature: float = 1.0, split: str = "test", seed: int = 0,
             batch_prompts: int = 64) -> Diagnosis:
    """Diagnose `model` on `n_per_level` items of each task and level (see the module docstring).

    Greedy accuracy comes from `evaluation.evaluate` on the same items; `samples` completions
    per prompt at `temperature` give everything else."""
    prof = get_profile(profile)
    n = n_per_level or prof.eval_per_level
    max_new_tokens = max_new_tokens or prof.max_new_tokens * (4 if reasoning else 1)
    tasks = list(tasks or VERIFIABLE_DOMAINS)
    greedy = evaluate(model, tokenizer, tasks, profile=prof, n_per_level=n, difficulties=difficulties,
                      reasoning=reasoning, chat=chat, max_new_tokens=max_new_tokens, seed=seed)
    rows = []
    for name in tasks:
        task = get_task(name)
        for level in difficulties:
            examples = task.sample(n, split=split, seed=seed, difficulty=level)
            correct, lengths, ent_sum, ent_tokens = [], [], 0.0, 0
            for i in range(0, len(examples), batch_prompts):
                chunk = examples[i:i + batch_prompts]
                ro = generate(model, tokenizer, [e.prompt for e in chunk], num_samples=samples,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              seed=seed * 7919 + i + 1, chat=chat)
                scores = torch.tensor([task.score(chunk[j // samples], text)
                                       for j, text in enumerate(ro.texts)])
                correct += (scores >= 1.0).view(len(chunk), samples).sum(dim=1).tolist()
                lengths += ro.completion_lengths.tolist()
                logits, _ = window_forward(model, ro.input_ids, ro.attention_mask, ro.prompt_length,
                                           ro.prompt_index)
                W = ro.prompt_length - 1
                if temperature > 0:
                    logits = logits / temperature
                mask = ro.completion_mask[:, W:]
                ent_sum += float(losses.masked_sum(losses.token_entropy(logits), mask))
                ent_tokens += int(mask.sum())
            rows.append({
                "domain": name, "difficulty": level, "n": len(examples),
                "greedy": greedy.accuracy(name, level),
                "t1": sum(correct) / (samples * len(correct)),
                "pass@k": {k: sum(pass_at_k(samples, c, k) for c in correct) / len(correct)
                           for k in ks_up_to(samples)},
                "learnable": sum(0 < c < samples for c in correct) / len(correct),
                "solved": sum(c == samples for c in correct) / len(correct),
                "unreachable": sum(c == 0 for c in correct) / len(correct),
                "entropy": ent_sum / max(ent_tokens, 1),
                "length": sum(lengths) / max(len(lengths), 1),
                "correct_counts": correct,
            })
    return Diagnosis(rows=rows, samples_per_prompt=samples,
                     meta={"n_per_level": n, "temperature": temperature, "reasoning": reasoning,
                           "chat": chat, "max_new_tokens": max_new_tokens, "seed": seed, "split": split})


@torch.no_grad()
@model_threads
def _pass_rates(model, tokenizer, examples, *, samples, max_new_tokens, temperature, chat, seed,
                batch_prompts):
    """`(rates, cost)`: each example's pass rate over `samples` samples, and what the sampling
    cost: tokens generated and tokens run through the model (prompt + completion)."""
    rates, generated, forward = [], 0, 0
    for i in range(0, len(examples), batch_prompts):
        chunk = examples[i:i + batch_prompts]
        ro = generate(model, tokenizer, [e.prompt for e in chunk], num_samples=samples,
                      max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + i, chat=chat)
        scores = torch.tensor([get_task(chunk[j // samples].domain).score(chunk[j // samples], text)
                               for j, text in enumerate(ro.texts)])
        rates += ((scores >= 1.0).float().view(len(chunk), samples).mean(dim=1)).tolist()
        generated += int(ro.completion_mask.sum())
        forward += int(ro.attention_mask.sum())
    return rates, {"tokens_generated": generated, "forward_tokens": forward}


def _keep(examples, rates, low: float, high: float) -> list:
    """The examples whose pass rate lies strictly between `low` and `high`: the learnable ones."""
    return [e for e, r in zip(examples, rates) if low < r < high]


def learnable_examples(model, tokenizer, examples, *, samples: int = 8, max_new_tokens: int = 32,
                       temperature: float = 1.0, chat: bool = True, seed: int = 0, batch_prompts: int = 64,
                       low: float = 0.0, high: float = 1.0):
    """The examples whose pass rate over `samples` samples lies strictly between `low` and
    `high` (default: neither solved by every sample nor by none), with all pass rates: RL prompt
    selection from the diagnosis. Returns (kept examples, pass rates of all examples)."""
    rates, _ = _pass_rates(model, tokenizer, examples, samples=samples, max_new_tokens=max_new_tokens,
                           temperature=temperature, chat=chat, seed=seed, batch_prompts=batch_prompts)
    return _keep(examples, rates, low, high), rates


@dataclass(frozen=True)
class PromptSelection:
    """RL prompt selection from the diagnosis: draw `candidates` train prompts from the online
    config's domains and levels, sample each `samples` times, keep those with `low` < pass rate
    < `high` (the learnable ones). Part of an online stage's cache key."""
    candidates: int = 512
    samples: int = 8
    low: float = 0.0
    high: float = 1.0


def select_prompts(model, tokenizer, cfg, selection: PromptSelection, *, seed: int = 0):
    """`(pool, info)`: the learnable train prompts for online config `cfg` (its domains,
    difficulty, decoding budget and chat flag) and what the selection saw and cost (candidates,
    kept fraction, mean pass rate; tokens generated, tokens run through the model, their
    FLOPs (2 x params x tokens) and seconds)."""
    start = time.perf_counter()
    domains = tuple(cfg.domains)
    per = -(-selection.candidates // len(domains))
    candidates = []
    for d, name in enumerate(domains):
        candidates += get_task(name).sample(per, split="train", seed=seed * 7_907 + 10_007 + d,
                                            difficulty=cfg.difficulty)
    rates, cost = _pass_rates(model, tokenizer, candidates, samples=selection.samples,
                              max_new_tokens=cfg.max_new_tokens, temperature=1.0, chat=cfg.chat, seed=seed,
                              batch_prompts=64)
    kept = _keep(candidates, rates, selection.low, selection.high)
    info = {"candidates": len(candidates), "kept": len(kept), "kept_fraction": len(kept) / len(candidates),
            "mean_pass_rate": sum(rates) / len(rates), **cost,
            "flops": 2.0 * count_parameters(model) * cost["forward_tokens"],
            "wall_time": time.perf_counter() - start}
    return kept, info
