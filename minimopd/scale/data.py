"""minimopd tasks as trl data: a `datasets.Dataset` of prompts and reward functions over its rows.

A row carries everything the task's verifier needs, so a reward function can rebuild the
`Example` and call the task's own `score` (one source of truth for what counts as correct):

    prompt       [{"role": "user", "content": text}] (chat: trl renders the model's chat
                 template) or the raw text (`chat=False`, R1-Zero on a base model)
    answer, domain, difficulty    the `Example`'s fields
    teacher_id   the teacher that scores the row in routed distillation (`signals.routed.route_of`:
                 the example's `meta["teacher_id"]` when set, else its domain)
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..rewards import accuracy_reward, format_reward, r1_reward
from ..rollout import completion_text
from ..signals.routed import route_of
from ..tasks import Example, get_task
from ..tasks.base import VERIFIABLE_DOMAINS

COLUMNS = ("prompt", "answer", "domain", "difficulty", "teacher_id")


def example_rows(examples: Sequence[Example], *, chat: bool = True) -> list[dict]:
    """One dataset row per example (see the module docstring)."""
    return [{"prompt": [{"role": "user", "content": ex.prompt}] if chat else ex.prompt,
             "answer": ex.answer, "domain": ex.domain, "difficulty": ex.difficulty,
             "teacher_id": route_of(ex)} for ex in examples]


def task_dataset(n_per_domain: int, *, domains: Sequence[str] = VERIFIABLE_DOMAINS, difficulty=None,
                 split: str = "train", seed: int = 0, chat: bool = True):
    """A `datasets.Dataset` of `n_per_domain` items of each domain, interleaved domain by domain
    (so any contiguous batch mixes the domains, as the online loop's steps do).

    `difficulty`: a level, a list of levels or None (all levels), as `Task.sample` takes it."""
    from datasets import Dataset

    if n_per_domain < 1:
        raise ValueError(f"n_per_domain must be >= 1, got {n_per_domain}")
    per = [get_task(d).sample(n_per_domain, split=split, seed=seed * 1_009 + i, difficulty=difficulty)
           for i, d in enumerate(domains)]
    interleaved = [ex for group in zip(*per) for ex in group]
    return Dataset.from_list(example_rows(interleaved, chat=chat))


def rows_to_examples(prompts, answer, domain, difficulty) -> list[Example]:
    """The `Example`s of a batch of dataset rows (as trl passes their columns to a reward)."""
    return [Example(p if isinstance(p, str) else p[-1]["content"], a, d, lvl)
            for p, a, d, lvl in zip(prompts, answer, domain, difficulty)]


def trl_reward(fn: Callable[[Example, str], float], tokenizer, name: str | None = None):
    """A minimopd reward `fn(example, completion) -> float` as a trl reward function
    `f(prompts, completions, completion_ids, **columns) -> list[float]` over `task_dataset` rows.
    The completion is decoded from its ids as minimopd's sampler decodes it (`completion_text`):
    trl's own text drops special tokens, and with them the reasoning tags the format reward checks."""
    def reward(prompts, completions, completion_ids, answer, domain, difficulty, **_):
        examples = rows_to_examples(prompts, answer, domain, difficulty)
        return [float(fn(ex, completion_text(tokenizer, ids))) for ex, ids in zip(examples, completion_ids)]
    reward.__name__ = name or getattr(fn, "__name__", "reward")
    return reward


REWARDS = {   # name -> ((name, reward), ...) and their weights: the (N, F) matrix trl sums with weights
    "accuracy": ((("accuracy", accuracy_reward),), (1.0,)),
    # R1's rule reward, accuracy x format + 0.5 x format, as one column (accuracy only counts when
    # the format is right, so it cannot be split into a weighted sum of the two)
    "r1": ((("r1", r1_reward(0.5)),), (1.0,)),
    # the two rules as separate columns, logged one by one: accuracy + 0.5 x format
    "accuracy+format": ((("accuracy", accuracy_reward), ("format", format_reward)), (1.0, 0.5)),
}


def reward_funcs(name: str, tokenizer):
    """`(functions, weights)` of a named reward for `GRPOTrainer(reward_funcs=..., args.reward_weights=...)`."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
    named, weights = REWARDS[name]
    return [trl_reward(fn, tokenizer, label) for label, fn in named], list(weights)
