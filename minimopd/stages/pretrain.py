"""Stage 0 — pretrain a base model on the built-in synthetic corpus.

Real post-training starts from a pretrained base that has absorbed a lot of raw text but was
never taught to *answer*. We make one in miniature: the corpus is every domain's items written
as raw, non-chat text ("48+375=423", "sort 5 12 3 -> 3 5 12", short notes), and a fraction of
them carry worked step-by-step solutions, so reasoning is latent in the base and RL can later
elicit it (as R1-Zero does). Only train-split items are used: test items stay unseen.

Run it alone:  python -m minimopd.stages.pretrain --profile smoke
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import build_model
from ..profiles import Profile, get_profile
from ..models import forward_logits
from ..tasks import PREFERENCE_DOMAIN, VERIFIABLE_DOMAINS, get_task
from ..tokenizer import build_tokenizer
from .common import OptimConfig, StageResult, train_offline


@dataclass
class PretrainConfig:
    model_size: str = "tiny"
    steps: int = 30
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 3e-3
    corpus_lines: int = 2000
    worked_fraction: float = 0.3      # share of lines that show worked steps
    tagged_fraction: float = 0.05     # share written as "<prompt> <think>steps</think><answer>..."
    domains: tuple[str, ...] = VERIFIABLE_DOMAINS + (PREFERENCE_DOMAIN,)
    seed: int = 0

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> "PretrainConfig":
        p = get_profile(profile)
        base = dict(model_size=p.model_size, steps=p.pretrain_steps, batch_size=p.pretrain_batch_size,
                    seq_len=p.pretrain_seq_len, lr=p.pretrain_lr, corpus_lines=p.corpus_lines,
                    tagged_fraction=p.pretrain_tagged_fraction)
        return cls(**{**base, **overrides})


def build_corpus(domains, n_lines: int, *, seed: int = 0, worked_fraction: float = 0.3,
                 tagged_fraction: float = 0.05, split: str = "train") -> list[str]:
    """`n_lines` raw-text lines spread evenly over domains and difficulty levels.

    A `worked_fraction` of lines show step-by-step solutions; a small `tagged_fraction` show them
    inside `<think>`/`<answer>` tags, the way reasoning traces appear in web text, so the tags
    are not unknown tokens to the base model (RL from the base, R1-Zero style, must be able to
    stumble on the format before it can be rewarded for it)."""
    rng = random.Random(f"corpus/{seed}/{split}")
    per_domain = max(1, n_lines // len(domains))
    lines = []
    for d, name in enumerate(domains):
        task = get_task(name)
        examples = task.sample(per_domain, split=split, seed=seed * 1000 + d)
        for ex in examples:
            u = rng.random()
            if u < tagged_fraction and task.kind != "preference":
                lines.append(f"{ex.prompt} {task.solution(ex, reasoning=True)}")
            else:
                lines.append(task.corpus_text(ex, worked=u < tagged_fraction + worked_fraction))
    rng.shuffle(lines)
    return lines


def pack_corpus(tokenizer, lines: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate lines into one token stream, each closed by the end token `<|end|>` (the
    document separator of real pretraining, so the base knows how to stop), and cut it into
    `(num_chunks, seq_len)` rows. Packing wastes no compute on padding, unlike one line a row."""
    end = [tokenizer.eos_token_id]
    # The Rust backend encodes a batch in parallel, ~10x faster than the Python wrapper.
    encodings = tokenizer.backend_tokenizer.encode_batch(list(lines), add_special_tokens=False)
    ids: list[int] = []
    for enc in encodings:
        ids += enc.ids + end
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one sequence of {seq_len}; "
                         "raise corpus_lines or lower seq_len")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def lm_loss(model, batch) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy over every position of a packed batch."""
    ids = batch["input_ids"]
    logits = forward_logits(model, ids, batch["attention_mask"])
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    return loss, {}


@torch.no_grad()
def heldout_loss(model, chunks: torch.Tensor, device: str, batch_size: int = 32) -> float:
    """Mean next-token loss on held-out (test-split) corpus chunks."""
    total, n = 0.0, 0
    for i in range(0, len(chunks), batch_size):
        ids = chunks[i:i + batch_size].to(device)
        loss, _ = lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        total, n = total + loss.item() * len(ids), n + len(ids)
    return total / max(n, 1)


def pretrain(config: PretrainConfig, *, tokenizer=None, device: str = "cpu",
             progress: bool = True) -> StageResult:
    """Build a fresh model of `config.model_size` and train it on the synthetic corpus."""
    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(config.seed)
    model = build_model(config.model_size, tokenizer, seed=config.seed)
    lines = build_corpus(config.domains, config.corpus_lines, seed=config.seed,
                         worked_fraction=config.worked_fraction,
                         tagged_fraction=config.tagged_fraction)
    chunks = pack_corpus(tokenizer, lines, config.seq_len)
    val_lines = build_corpus(config.domains, max(200, config.corpus_lines // 50), seed=config.seed,
                             worked_fraction=config.worked_fraction,
                             tagged_fraction=config.tagged_fraction, split="test")
    val_chunks = pack_corpus(tokenizer, val_lines, config.seq_len)[:64]

    def batches():
        g = torch.Generator().manual_seed(config.seed)
        while True:
            for idx in torch.randperm(len(chunks), generator=g).split(config.batch_size):
                if len(idx) == config.batch_size or len(chunks) < config.batch_size:
                    ids = chunks[idx]
                    yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    result = train_offline(
        model, batches(), lm_loss, steps=config.steps, stage="pretrain", device=device,
        optim=OptimConfig(lr=config.lr, weight_decay=0.1, warmup_steps=max(1, config.steps // 20)),
        eval_fn=lambda m: {"heldout_loss": heldout_loss(m, val_chunks, device)},
        eval_every=max(1, config.steps // 10), log_every=max(1, config.steps // 200),
        progress=progress)
    result.info.update(corpus_tokens=chunks.numel(), corpus_lines=len(lines),
                       heldout_loss=result.last("eval/heldout_loss"),
                       final_loss=result.history[-1]["loss"])
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--out", default=None, help="directory to save the base model into")
    args = ap.parse_args()
    prof = get_profile(args.profile)
    res = pretrain(PretrainConfig.from_profile(prof), device=prof.device)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in res.info.items()})
    if args.out:
        from ..models import save_model
        save_model(res.model, build_tokenizer(), args.out)
