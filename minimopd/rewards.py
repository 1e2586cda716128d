"""Rule-based rewards of RLVR and DeepSeek-R1, and the rejection-sampling filter.

A reward function has the signature `reward(example, completion) -> float`; the verifier signal
(`signals/outcome.py`) calls it once per sampled completion. R1-Zero's rules are an accuracy reward (the
task's verifier) plus a format reward for `<think>...</think><answer>...</answer>`; R1 adds a
language-consistency reward during reasoning RL, which in our miniature becomes *answer
consistency*: the answer must equal the result the reasoning arrived at (the text after the
last "->" in the think block), so the trace has to actually lead to the answer it gives.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

from .tasks import THINK_CLOSE, THINK_OPEN, extract_answer, format_ok, get_task, normalize_answer

RewardFn = Callable[[object, str], float]


def accuracy_reward(example, completion: str) -> float:
    """1.0 if the task's verifier accepts the completion's final answer, else 0.0."""
    return float(get_task(example.domain).score(example, completion))


def format_reward(example, completion: str) -> float:
    """1.0 if the completion is exactly `<think>...</think><answer>...</answer>`, else 0.0."""
    return 1.0 if format_ok(completion) else 0.0


def consistency_reward(example, completion: str) -> float:
    """1.0 if the think block's conclusion (text after its last '->') equals the given answer.

    The miniature analogue of R1's language-consistency reward: a cheap rule on the *trace*,
    not the outcome, that keeps reasoning readable and tied to the answer. 0.0 without a
    well-formed trace or without a conclusion.
    """
    if not format_ok(completion):
        return 0.0
    think = completion.split(THINK_OPEN, 1)[1].split(THINK_CLOSE, 1)[0]
    if "->" not in think:
        return 0.0
    conclusion = think.rsplit("->", 1)[1]
    return float(normalize_answer(conclusion) == normalize_answer(extract_answer(completion)))


def r1_reward(format_weight: float = 0.5, consistency_weight: float = 0.0) -> RewardFn:
    """R1-style rule reward: accuracy + format_weight * format (+ consistency_weight * consistency).

    Accuracy only counts when the format is right (as in R1-Zero, where an answer outside the
    tags cannot be parsed by the rule): otherwise the policy could skip the trace entirely.
    """
    def reward(example, completion: str) -> float:
        fmt = format_reward(example, completion)
        total = fmt * accuracy_reward(example, completion) + format_weight * fmt
        if consistency_weight:
            total += consistency_weight * consistency_reward(example, completion)
        return total
    reward.__name__ = f"r1_reward(format={format_weight}, consistency={consistency_weight})"
    return reward


def rejection_filter(examples: Sequence, completions: Sequence[str], scores: Sequence[float], *,
                     per_prompt: int = 1, require_format: bool = False) -> list[tuple[str, str]]:
    """Keep verified-correct samples as SFT pairs: R1's (and Llama's) rejection sampling.

    `examples[i]` produced `completions[i]` with verifier score `scores[i]`. Returns at most
    `per_prompt` distinct `(prompt, completion)` pairs per prompt, only with score == 1 (and a
    well-formed trace if `require_format`), in first-seen order.
    """
    if not (len(examples) == len(completions) == len(scores)):
        raise ValueError(f"rejection_filter: {len(examples)} examples, {len(completions)} completions "
                         f"and {len(scores)} scores must have the same length")
    kept: dict[str, list[str]] = {}
    for ex, text, score in zip(examples, completions, scores):
        if score != 1.0 or (require_format and not format_ok(text)):
            continue
        bucket = kept.setdefault(ex.prompt, [])
        text = re.sub(r"\s+$", "", text)
        if len(bucket) < per_prompt and text not in bucket:
            bucket.append(text)
    return [(prompt, text) for prompt, texts in kept.items() for text in texts]
