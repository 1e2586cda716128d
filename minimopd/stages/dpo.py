"""Direct Preference Optimisation (Rafailov et al. 2023): RLHF's objective without a reward
model or sampling during training.

PPO maximises E[r(x, y)] - beta KL(pi || ref). That objective's optimum is
pi*(y|x) proportional to ref(y|x) exp(r(x, y) / beta), so r(x, y) = beta log(pi*(y|x) / ref(y|x)) up to a term
that depends on x only, and that term cancels in a Bradley-Terry comparison of two responses to
the same prompt. Put the policy's own log-ratio in place of the reward in the reward model's loss
and the policy is trained directly on the pairs:

    L = -log sigma(beta [log pi(y_w)/ref(y_w) - log pi(y_l)/ref(y_l)])      (`losses.dpo_loss`)

with log pi(y) the response's summed token log-probs (`losses.sequence_logps`). beta *
log pi(y)/ref(y) is the *implicit reward*; the share of pairs it orders as the labels do is
DPO's reward accuracy.

What this stage keeps from the paper: the sigmoid loss on summed log-probs, the SFT model as the
frozen reference, its log-probs computed once before training (they never change). Also
available: IPO (Azar et al. 2023; `loss_type="ipo"`, a squared loss that does not push the
margin to infinity on deterministic preferences), conservative DPO (`label_smoothing`, labels
assumed flipped with that probability) and Tülu 3's length-normalised DPO (`length_normalize`:
each response's log-ratio is divided by its number of tokens, policy and reference alike, so h
compares per-token log-ratios and a long response gets no larger implicit reward for its length;
Tülu 3 paired it with beta = 5, as a per-token log-ratio is ~1/length of the summed one). What
differs: batches of 16-64 pairs of short notes, and a learning rate for a model of 0.1-10 M
parameters (the paper's 1e-6 is for billions).

Where the pairs come from is the recipe's business (`comparisons`): samples of the policy
ranked by a reward model (this course's stand-in for Llama 3's human-labelled pairs), a stronger
and a weaker model's samples (OLMo 3's delta learning), or labelled rankings
(`tasks.preference_pairs`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .. import losses
from ..data import build_sft_example, collate
from ..models import count_parameters, forward_logits, sequence_logprobs
from ..profiles import Profile, get_profile
from .common import OptimConfig, StageResult, cycle_batches, train_offline
from .reward_model import pair_right


TIE_NATS = 1e-4    # log-ratio margins h closer to 0 than this are ties: float32 sums of a response's
                   # log-probs computed two ways (as Lab 04's and the library's are) differ by ~1e-5


@dataclass
class DPOConfig:
    steps: int = 60
    batch_size: int = 32               # pairs per step
    beta: float = 0.1
    loss_type: str = "sigmoid"         # "sigmoid" (DPO) | "ipo"
    label_smoothing: float = 0.0       # conservative DPO: the labels' assumed flip rate
    length_normalize: bool = False     # Tülu 3's DPO-norm: each log-ratio divided by its response's length
    lr: float = 2e-5
    warmup_steps: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.loss_type not in losses.DPO_LOSS_TYPES:
            raise ValueError(f"DPOConfig.loss_type={self.loss_type!r}: expected one of {losses.DPO_LOSS_TYPES}")
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta={self.beta}: beta must be > 0 (it scales the implicit reward; "
                             "a larger beta keeps the policy closer to the reference)")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig.label_smoothing={self.label_smoothing}: must be in [0, 0.5) (the "
                             "assumed share of flipped labels)")
        if self.loss_type != "sigmoid" and self.label_smoothing:
            raise ValueError("DPOConfig.label_smoothing only applies to loss_type='sigmoid' (conservative DPO)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"DPOConfig needs steps >= 1 and batch_size >= 1, got {self.steps} and {self.batch_size}")

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> "DPOConfig":
        """Half the SFT batch in pairs (each pair is two sequences), the RL stages' step count
        divided by five, and the profile's RL learning rate times 0.4."""
        p = get_profile(profile)
        base = dict(steps=max(4, p.rl_steps // 5), batch_size=max(4, p.sft_batch_size // 2), lr=p.rl_lr * 0.4)
        return cls(**{**base, **overrides})


def pair_rows(tokenizer, pairs, *, context: int | None = None) -> list[dict]:
    """Each (prompt, chosen, rejected) pair (dicts with those keys) as two chat examples: `chosen`
    and `rejected`, each `(input_ids, loss_mask)` with the response and its end-of-turn token
    marked. A pair of identical responses, an empty list or a sequence longer than `context` is
    a ValueError."""
    if not pairs:
        raise ValueError("no preference pairs: DPO needs at least one (prompt, chosen, rejected) pair")
    rows = []
    for p in pairs:
        missing = {"prompt", "chosen", "rejected"} - set(p)
        if missing:
            raise ValueError(f"a preference pair lacks {sorted(missing)}: pairs are dicts with prompt, chosen "
                             "and rejected (as tasks.preference_pairs and comparisons.ranked_pairs return)")
        if p["chosen"] == p["rejected"]:
            raise ValueError(f"a pair for {p['prompt']!r} has the same response {p['chosen']!r} as chosen and "
                             "rejected: its DPO gradient is zero and it says nothing; drop it")
        row = {"chosen": build_sft_example(tokenizer, p["prompt"], p["chosen"]),
               "rejected": build_sft_example(tokenizer, p["prompt"], p["rejected"])}
        longest = max(len(row["chosen"][0]), len(row["rejected"][0]))
        if context is not None and longest > context:
            raise ValueError(f"a pair for {p['prompt']!r} is {longest} tokens, longer than the model's context "
                             f"({context}): shorten the responses or build the model with a longer context")
        rows.append(row)
    return rows


def collate_pairs(rows, pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs as one right-padded batch of 2B sequences: rows 0..B-1 the chosen responses, rows
    B..2B-1 the rejected ones (`input_ids`, `attention_mask`, `loss_mask`, (2B, T)); with
    `ref_chosen`, `ref_rejected` (B,) when the rows carry reference log-probs (`ref`)."""
    batch = collate([r["chosen"] for r in rows] + [r["rejected"] for r in rows], pad_id)
    if all("ref" in r for r in rows):
        batch["ref_chosen"] = torch.tensor([r["ref"][0] for r in rows])
        batch["ref_rejected"] = torch.tensor([r["ref"][1] for r in rows])
    return batch


def _sequence_logps(model, batch) -> torch.Tensor:
    """(2B,) each sequence's summed response log-probs (`models.sequence_logprobs`, then
    `losses.sequence_logps` over the loss mask)."""
    return losses.sequence_logps(sequence_logprobs(model, batch["input_ids"], batch["attention_mask"]),
                                 batch["loss_mask"])


@torch.no_grad()
def attach_reference(reference, rows, pad_id: int, *, batch_size: int = 64) -> int:
    """Store each row's reference log-probs `ref` = (log ref(chosen), log ref(rejected)), computed
    once: the reference is frozen, so a forward pass per training step would recompute the same
    numbers. Returns the tokens it read."""
    device = next(reference.parameters()).device
    was_training = reference.training
    reference.eval()
    tokens = 0
    for i in range(0, len(rows), batch_size):
        part = rows[i:i + batch_size]
        batch = {k: v.to(device) for k, v in collate_pairs(part, pad_id).items()}
        seq = _sequence_logps(reference, batch).float().cpu()
        tokens += int(batch["attention_mask"].sum())
        for j, row in enumerate(part):
            row["ref"] = (float(seq[j]), float(seq[len(part) + j]))
    reference.train(was_training)
    return tokens


def dpo_step(model, batch, config: DPOConfig, *, logps_fn=None, loss_fn=None):
    """One DPO loss on a batch of `collate_pairs` (with reference log-probs): the mean of
    `losses.dpo_loss` over its pairs, and its metrics: the implicit rewards of chosen and
    rejected responses, their margin, the reward accuracy (a tie, |h| <= `TIE_NATS`, counts half)
    and the policy's log-probs of both (DPO can lower both while it widens the gap).

    Lab 04's hooks: `logps_fn(logits (2B, T, V), input_ids, loss_mask) -> (2B,)` replaces the
    sequence log-probs and `loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected) ->
    (B,)` the per-pair loss (beta and the loss type are then the caller's); the implicit-reward
    metrics stay the library's, at `config.beta`.

    With `config.length_normalize` every sequence's log-prob, the policy's and the reference's,
    is divided by its response's token count before the loss (and in the metrics: `logp_*` are
    then per-token means); `loss_fn` gets the divided values."""
    if logps_fn is None:
        seq = _sequence_logps(model, batch)
    else:
        seq = logps_fn(forward_logits(model, batch["input_ids"], batch["attention_mask"]), batch["input_ids"],
                       batch["loss_mask"])
    n = seq.shape[0] // 2
    ref_c, ref_r = batch["ref_chosen"], batch["ref_rejected"]
    if config.length_normalize:
        tokens = batch["loss_mask"].sum(-1).clamp(min=1).to(seq.dtype)
        seq = seq / tokens
        ref_c, ref_r = ref_c / tokens[:n], ref_r / tokens[n:]
    per_pair, r_c, r_r = losses.dpo_loss(seq[:n], seq[n:], ref_c, ref_r, beta=config.beta, loss_type=config.loss_type,
                                         label_smoothing=config.label_smoothing)
    if loss_fn is not None:
        per_pair = loss_fn(seq[:n], seq[n:], ref_c, ref_r)
        if per_pair.shape != r_c.shape:
            raise ValueError(f"train_dpo's loss_fn returned shape {tuple(per_pair.shape)}: it must return one loss "
                             f"per pair, shape ({n},)")
    accuracy = pair_right(r_c, r_r, tie=config.beta * TIE_NATS).mean()
    return per_pair.mean(), {"reward_accuracy": accuracy, "reward_margin": (r_c - r_r).mean(),
                             "chosen_reward": r_c.mean(), "rejected_reward": r_r.mean(),
                             "logp_chosen": seq[:n].detach().mean(), "logp_rejected": seq[n:].detach().mean()}


def train_dpo(model, tokenizer, pairs, config: DPOConfig, *, reference=None, device: str = "cpu",
              progress: bool = True, logps_fn=None, loss_fn=None) -> StageResult:
    """Train `model` by DPO on `pairs` (dicts with prompt, chosen, rejected). `reference`
    (default: a frozen copy of `model` as it is now) must share the tokenizer. FLOPs (training:
    6 x params x tokens; the reference's one pass: 2 x params x tokens) are in `info["flops"]`.
    `logps_fn` and `loss_fn` replace the library's sequence log-probs and loss in training (Lab
    04; see `dpo_step`); the reference's log-probs are always the library's."""
    reference = reference if reference is not None else copy.deepcopy(model)
    if reference.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"the DPO reference has a vocabulary of {reference.config.vocab_size} tokens and the "
                         f"policy {model.config.vocab_size}: both must use the same tokenizer")
    reference.to(device)
    rows = pair_rows(tokenizer, pairs, context=model.config.max_position_embeddings)
    ref_tokens = attach_reference(reference, rows, tokenizer.pad_token_id)
    result = train_offline(
        model, cycle_batches(rows, min(config.batch_size, len(rows)),
                             lambda b: collate_pairs(b, tokenizer.pad_token_id), seed=config.seed),
        lambda m, b: dpo_step(m, b, config, logps_fn=logps_fn, loss_fn=loss_fn), steps=config.steps, stage="dpo",
        device=device,
        optim=OptimConfig(lr=config.lr, warmup_steps=config.warmup_steps), progress=progress)
    params = count_parameters(model)
    result.info.update(pairs=len(rows), epochs=config.steps * min(config.batch_size, len(rows)) / len(rows),
                       ref_tokens=ref_tokens,
                       flops=6.0 * params * result.info["tokens"] + 2.0 * count_parameters(reference) * ref_tokens)
    return result
