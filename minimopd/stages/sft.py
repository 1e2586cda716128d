"""Stage 1 — supervised fine-tuning (SFT): teach the base model to answer in the chat format.

InstructGPT's first step, and still the first step of every recipe since: show the model
(prompt, good response) pairs and maximise the likelihood of the response tokens only — the
prompt is context, not something the model should learn to produce. Here the responses are the
tasks' reference solutions (answers only, or `<think>` worked steps + `<answer>` when
`reasoning=True`, the "cold start" data of DeepSeek-R1).

The four building blocks (how a pair becomes tensors, token log-probs, the loss) are plain
functions passed in as arguments, so Lab 01 trains this exact loop with the student's own.

Run it: `minimopd lineage --recipes sft` (base -> SFT), or call `train_sft`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .. import data as data_lib
from .. import losses
from ..profiles import Profile, get_profile
from ..models import forward_logits
from ..tasks import PREFERENCE_DOMAIN, VERIFIABLE_DOMAINS, get_task
from .common import OptimConfig, StageResult, cycle_batches, train_offline


@dataclass
class SFTConfig:
    steps: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    n_examples: int = 200
    reasoning: bool = False            # train on <think>..</think><answer>..</answer> targets
    domains: tuple[str, ...] = VERIFIABLE_DOMAINS + (PREFERENCE_DOMAIN,)
    warmup_steps: int = 10
    eval_every: int = 0
    seed: int = 0

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> "SFTConfig":
        p = get_profile(profile)
        base = dict(steps=p.sft_steps, batch_size=p.sft_batch_size, lr=p.sft_lr,
                    n_examples=p.sft_examples)
        return cls(**{**base, **overrides})


def sft_dataset(domains, n: int, *, seed: int = 0, reasoning: bool = False,
                split: str = "train", difficulty=None) -> list[tuple[str, str]]:
    """`n` (prompt, reference response) pairs spread evenly over `domains`, shuffled."""
    per_domain = max(1, n // len(domains))
    pairs = []
    for d, name in enumerate(domains):
        task = get_task(name)
        for ex in task.sample(per_domain, split=split, seed=seed * 7919 + d, difficulty=difficulty):
            pairs.append((ex.prompt, task.solution(ex, reasoning=reasoning and task.kind != "preference")))
    random.Random(seed).shuffle(pairs)
    return pairs


def train_sft(model, tokenizer, pairs: list[tuple[str, str]], config: SFTConfig, *,
              build_example=None, collate=None, token_logprobs=None, sft_loss=None,
              eval_fn=None, device: str = "cpu", progress: bool = True,
              stop_at: int | None = None) -> StageResult:
    """Fine-tune `model` on `(prompt, response)` pairs with a response-only loss.

    `stop_at` = k: the same run's checkpoint after k of its `config.steps` steps.

    The optional function arguments replace the library's reference implementations
    (`data.build_sft_example`, `data.collate`, `losses.token_logprobs`, `losses.sft_loss`).
    """
    build_example = build_example or data_lib.build_sft_example
    collate = collate or data_lib.collate
    token_logprobs = token_logprobs or losses.token_logprobs
    sft_loss = sft_loss or losses.sft_loss
    if not pairs:
        raise ValueError("train_sft() got no (prompt, response) pairs")
    context = model.config.max_position_embeddings
    examples = []
    for prompt, response in pairs:
        ids, mask = build_example(tokenizer, prompt, response)
        if len(ids) > context:
            raise ValueError(f"an SFT example is {len(ids)} tokens, longer than the model's context "
                             f"({context}): shorten it or build the model with a longer context")
        examples.append((ids, mask))

    def step(model, batch):
        logits = forward_logits(model, batch["input_ids"], batch["attention_mask"])
        logprobs = token_logprobs(logits, batch["input_ids"])
        per_example = sft_loss(logprobs, batch["loss_mask"])
        return per_example.mean(), {"response_tokens": batch["loss_mask"].sum()}

    result = train_offline(
        model, cycle_batches(examples, config.batch_size,
                             lambda rows: collate(rows, tokenizer.pad_token_id), seed=config.seed),
        step, steps=config.steps, stage="sft", device=device,
        optim=OptimConfig(lr=config.lr, warmup_steps=config.warmup_steps),
        eval_fn=eval_fn, eval_every=config.eval_every, progress=progress, stop_at=stop_at)
    result.info.update(n_examples=len(examples), final_loss=result.history[-1]["loss"])
    return result
