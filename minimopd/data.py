"""Turning (prompt, response) text into training tensors.

The convention used everywhere in minimopd: a batch is right-padded `input_ids` (B, T) with an
`attention_mask` (B, T) and a `loss_mask` (B, T) that is 1 exactly on the tokens the model is
trained to produce (the assistant's response and its closing `<|end|>`). Per-token log-probs are
aligned with the same positions (see `losses.token_logprobs`), so masks never need shifting.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .tokenizer import chat_prompt


def build_sft_example(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of a one-turn chat and a mask marking the response tokens.

    Returns `(input_ids, loss_mask)`, two lists of equal length. The prompt part (user turn plus
    the `<|assistant|>` header) has mask 0; the response and the end-of-turn token have mask 1,
    because the model must also learn *when to stop*.
    """
    prompt_ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = response_ids + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `(input_ids, loss_mask)` pairs into a batch.

    Returns `input_ids` (B, T) long, `attention_mask` (B, T) long (1 on real tokens), and
    `loss_mask` (B, T) float (0 on padding), with T the longest example.
    """
    if len(examples) == 0:
        raise ValueError("collate() got no examples; pass at least one (input_ids, loss_mask) pair")
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), T), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), T), dtype=torch.float32)
    for i, (ids, mask) in enumerate(examples):
        if len(ids) != len(mask):
            raise ValueError(f"example {i}: input_ids has {len(ids)} tokens but loss_mask {len(mask)}")
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        loss_mask[i, : len(ids)] = torch.tensor(mask, dtype=torch.float32)
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}


def encode_texts(tokenizer, texts: Sequence[str], *, max_length: int) -> dict[str, torch.Tensor]:
    """Raw-text language-modelling batch (pretraining): every real token is trained on.

    Each text becomes `<|bos|> text <|end|>`, truncated to `max_length`.
    """
    rows = []
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = (ids + [tokenizer.eos_token_id])[:max_length]
        rows.append((ids, [0] + [1] * (len(ids) - 1)))
    return collate(rows, tokenizer.pad_token_id)
