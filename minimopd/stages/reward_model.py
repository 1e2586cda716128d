"""Stage 2 of InstructGPT: a reward model learned from pairwise comparisons.

Nobody can write down what makes a good note, but a labeller can say which of two notes is
better. The reward model r(x, y) is the SFT model's backbone with a scalar head read at the
response's last token (`models.RewardModel`). It is trained so that the preferred response of a
pair scores higher, under the Bradley-Terry model P(y_w beats y_l) = sigma(r_w - r_l): the loss is
-log sigma(r_w - r_l) (`losses.bradley_terry_loss`).

What this stage keeps from InstructGPT (Ouyang et al. 2022, section 3.5):

* K responses per prompt, every labelled pair of them in one batch element. The K responses go
  through the model once, and the prompt's loss is the mean over its pairs. Shuffled as
  separate examples, each response would be seen K - 1 times per epoch; InstructGPT reports
  that this overfits within one epoch. One epoch over the prompts, as there.
What differs: the labeller is a program (`tasks.preference.label_pair`: Bradley-Terry noise on
the hidden gold score, temperature 0.1); K = 4 (InstructGPT ranked 4 to 9); the reward model
has the policy's size (InstructGPT used a 6B reward model for a 175B policy). After training,
InstructGPT added a bias so that the labellers' demonstrations score 0 on average; here the
scores are shifted and scaled so that the reference policy's own samples (the SFT model that
PPO starts from) score mean 0 and std 1 (`RewardModel.set_normalisation`), as Ziegler et al.
(2019) did. PPO's reward then starts near 0 on the scale of its own samples.

Measured on held-out prompts (`evaluate_reward_model`): accuracy against fresh noisy labels, and
the ceiling that noise allows. A labeller who prefers a over b with probability p is
predicted right at most max(p, 1 - p) of the time, whoever predicts, so no reward model can
beat the mean of max(p, 1 - p) over the pairs (`pairwise_metrics`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .. import losses
from ..data import build_sft_example, collate
from ..models import RewardModel, count_parameters
from ..profiles import Profile, get_profile
from ..rollout import generate
from ..tasks import CRITERIA, PREFERENCE_DOMAIN, get_task, preference_rankings
from .common import OptimConfig, StageResult, cycle_batches, train_offline


NOTES_TOKENS = 4


@dataclass
class RewardModelConfig:
    steps: int = 100
    prompts_per_batch: int = 16        # batch elements: a prompt with its K responses and their pairs
    responses_per_prompt: int = 4      # K
    label_temperature: float = 0.1     # the labeller's Bradley-Terry noise on gold differences
    lr: float = 3e-4
    warmup_steps: int = 10
    normalise_samples: int = 256       # reference-policy samples that set the mean-0 / std-1 scale
    normalise_tokens: int = 128        # their token budget: the one PPO samples notes with
    seed: int = 0
    criterion: str = "gold"            # what the labeller compares by (`tasks.CRITERIA`)

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise ValueError(f"RewardModelConfig.criterion={self.criterion!r}: choose one of {', '.join(CRITERIA)}")

    def cache_dict(self) -> dict:
        """The settings that key a reward model: all of them, the criterion only when it is not
        gold (reward models cached before there were criteria keep their keys)."""
        d = asdict(self)
        if d["criterion"] == "gold":
            del d["criterion"]
        return d

    @property
    def n_prompts(self) -> int:
        """Training prompts: one epoch, each prompt seen once (a ranking without a labelled
        pair is dropped, and the last batches then start a second pass)."""
        return self.steps * self.prompts_per_batch

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> "RewardModelConfig":
        p = get_profile(profile)
        base = dict(steps=max(20, p.sft_steps // 4), prompts_per_batch=max(4, p.sft_batch_size // 4),
                    normalise_tokens=notes_tokens(p))
        return cls(**{**base, **overrides})


def notes_tokens(profile: Profile) -> int:
    """The token budget of a note: `NOTES_TOKENS` x the profile's max_new_tokens (about one token
    per character; notes are at most 160 characters)."""
    return profile.max_new_tokens * NOTES_TOKENS


def ranking_rows(tokenizer, rankings, *, context: int | None = None) -> list[dict]:
    """Each ranking (`tasks.preference_rankings`) as token ids: `ids` (K lists, the chat prompt,
    the response and the end-of-turn token, as PPO's rollouts will show them) and `pairs`.
    Rankings without a pair (all responses identical) are dropped; a pair of identical responses
    or an index outside the responses is a ValueError."""
    rows = []
    for r in rankings:
        if not r["pairs"]:
            continue
        k = len(r["responses"])
        for c, j in r["pairs"]:
            if not (0 <= c < k and 0 <= j < k):
                raise ValueError(f"the pair {(c, j)} of {r['prompt']!r} points outside its {k} responses "
                                 "(pairs are (chosen, rejected) indices into `responses`)")
            if r["responses"][c] == r["responses"][j]:
                raise ValueError(f"a pair of {r['prompt']!r} compares the response {r['responses'][c]!r} with "
                                 "itself: a preference between identical responses carries no signal (and "
                                 "a tie is not a preference); drop the pair")
        ids = [build_sft_example(tokenizer, r["prompt"], resp)[0] for resp in r["responses"]]
        if context is not None and max(map(len, ids)) > context:
            raise ValueError(f"a response to {r['prompt']!r} is {max(map(len, ids))} tokens, longer than the "
                             f"model's context ({context}): shorten it or build the model with a longer context")
        rows.append({"ids": ids, "pairs": list(r["pairs"])})
    if not rows:
        raise ValueError("no ranking has a labelled pair: every prompt's responses were identical")
    return rows


def collate_rankings(rows, pad_id: int) -> dict[str, torch.Tensor]:
    """A batch of rankings as one right-padded batch of all their responses.

    Returns `input_ids`, `attention_mask` (R, T) for the R responses of the batch, and for its
    P pairs `chosen`, `rejected` (P,) row indices into them and `group` (P,), the batch element
    (prompt) each pair belongs to."""
    seqs = [(ids, [1] * len(ids)) for row in rows for ids in row["ids"]]
    chosen, rejected, group = pair_index([(len(row["ids"]), row["pairs"]) for row in rows])
    batch = collate(seqs, pad_id)
    del batch["loss_mask"]
    return {**batch, "chosen": chosen, "rejected": rejected, "group": group}


def pair_index(rankings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rankings laid end to end: for `(K, pairs)` of each prompt (K responses, `(chosen,
    rejected)` index pairs into them), the (P,) rows of every pair's chosen and rejected response
    in the concatenation of all responses, and the prompt `group` of each pair."""
    chosen, rejected, group, offset = [], [], [], 0
    for g, (k, pairs) in enumerate(rankings):
        for c, r in pairs:
            chosen.append(offset + c)
            rejected.append(offset + r)
            group.append(g)
        offset += k
    return torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long), \
        torch.tensor(group, dtype=torch.long)


def ranking_loss(rewards: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
                 group: torch.Tensor) -> torch.Tensor:
    """InstructGPT's reward-model loss for a batch of rankings.

    rewards:  (R,) scores of the batch's responses
    chosen, rejected, group: (P,) per pair, the rows of its preferred and dispreferred responses
              and the prompt it belongs to (0 .. G-1, every prompt with at least one pair)
    Returns:  the scalar mean over prompts of each prompt's mean Bradley-Terry loss over its pairs.
    """
    if not len(group):
        raise ValueError("ranking_loss got no pairs: every batch element needs at least one labelled pair")
    per_pair = losses.bradley_terry_loss(rewards[chosen], rewards[rejected])
    n_groups = int(group.max()) + 1
    sums = per_pair.new_zeros(n_groups).index_add(0, group, per_pair)
    counts = per_pair.new_zeros(n_groups).index_add(0, group, torch.ones_like(per_pair))
    if (counts == 0).any():
        raise ValueError(f"prompts {(counts == 0).nonzero().flatten().tolist()[:5]} of the batch have no pair: "
                         "number the prompts 0 .. G-1 with at least one pair each")
    return (sums / counts).mean()


def pair_right(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, tie: float = 0.0) -> torch.Tensor:
    """(P,) float: 1 where a pair's chosen response scores higher than its rejected one, 1/2 on a
    tie (the model picks neither side; scores within `tie` of each other), 0 where it scores
    lower. Its mean is the pairwise accuracy of a reward model, or of DPO's implicit reward."""
    gap = chosen_rewards - rejected_rewards
    return (gap > tie).float() + 0.5 * (gap.abs() <= tie).float()


def pairwise_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                     gold_chosen: torch.Tensor, gold_rejected: torch.Tensor, temperature: float) -> dict:
    """How well a reward model predicts a noisy labeller, and the best any model could do.

    chosen_rewards, rejected_rewards: (P,) the model's scores of each labelled pair's preferred
        and dispreferred response (a tie counts as half right)
    gold_chosen, gold_rejected: (P,) their hidden gold scores
    temperature: the labeller's Bradley-Terry temperature (0: noiseless)

    The labeller prefers the labelled `chosen` side with probability
    p = sigmoid((gold_chosen - gold_rejected) / temperature). Returns, over the P pairs:
      accuracy           share of pairs whose label the model reproduces (these labels)
      expected_accuracy  its expectation over the labeller's noise: p where the model prefers
                         `chosen`, 1 - p where it prefers `rejected` (less noisy than `accuracy`)
      noise_ceiling      mean of max(p, 1 - p): the expected accuracy of the gold scorer itself,
                         the best any predictor can expect against these labels
      gold_agreement     share of pairs with unequal gold scores that the model orders as gold does
                         (a tie of the model orders nothing: it counts as not agreeing)
    """
    if temperature < 0:
        raise ValueError(f"the labeller's temperature must be >= 0, got {temperature}")
    right = pair_right(chosen_rewards, rejected_rewards)
    diff = (gold_chosen - gold_rejected).double()
    p = torch.sigmoid(diff / temperature) if temperature > 0 else (diff > 0).double() + 0.5 * (diff == 0).double()
    right = right.double()
    unequal = diff != 0
    model_sign = torch.sign(chosen_rewards - rejected_rewards).double()
    agree = (model_sign == torch.sign(diff)).double()[unequal]
    return {"accuracy": float(right.mean()), "expected_accuracy": float((right * p + (1 - right) * (1 - p)).mean()),
            "noise_ceiling": float(torch.maximum(p, 1 - p).mean()),
            "gold_agreement": float(agree.mean()) if unequal.any() else float("nan"), "pairs": len(right)}


@torch.no_grad()
def score_texts(reward_model, tokenizer, prompts, responses, *, batch_size: int = 256) -> torch.Tensor:
    """(N,) reward-model scores of `responses[i]` to `prompts[i]` (plain texts), read as the chat
    format PPO's rollouts use."""
    device = next(reward_model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        rows = [build_sft_example(tokenizer, p, r) for p, r in zip(prompts[i:i + batch_size],
                                                                    responses[i:i + batch_size])]
        batch = collate(rows, tokenizer.pad_token_id)
        out.append(reward_model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def evaluate_reward_model(reward_model, tokenizer, *, n_prompts: int = 300, responses_per_prompt: int = 4,
                          temperature: float = 0.1, seed: int = 0, criterion: str = "gold") -> dict:
    """`pairwise_metrics` on held-out (test-split) notes prompts, with fresh labels drawn by the
    same labeller (`criterion`) from the same kind of responses as the training data."""
    examples = get_task(PREFERENCE_DOMAIN).sample(n_prompts, split="test", seed=seed + 31)
    rankings = preference_rankings(examples, responses_per_prompt=responses_per_prompt, seed=seed + 31,
                                   temperature=temperature, criterion=criterion)
    prompts = [r["prompt"] for r in rankings for _ in r["responses"]]
    scores = score_texts(reward_model, tokenizer, prompts, [t for r in rankings for t in r["responses"]])
    chosen, rejected, _ = pair_index([(len(r["responses"]), r["pairs"]) for r in rankings])
    gold = torch.tensor([g for r in rankings for g in r["gold"]])
    return pairwise_metrics(scores[chosen], scores[rejected], gold[chosen], gold[rejected], temperature)


@torch.no_grad()
def normalise(reward_model, policy, tokenizer, *, n: int = 256, max_new_tokens: int = 32, seed: int = 0) -> dict:
    """Scale `reward_model` so the policy's own samples (T = 1, on train-split notes prompts)
    score mean 0 and std 1, as InstructGPT did with its reference policy. Scores the rollouts'
    own token ids, exactly what `signals.RewardModelSignal` will see. Returns the raw mean and
    std, and the tokens the sampling and scoring ran through each model."""
    prompts = [e.prompt for e in get_task(PREFERENCE_DOMAIN).sample(n, split="train", seed=seed + 53)]
    ro = generate(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed + 53)
    reward_model.set_normalisation(0.0, 1.0)
    device = next(reward_model.parameters()).device
    raw = reward_model(ro.input_ids.to(device), ro.attention_mask.to(device)).float()
    mean, std = float(raw.mean()), float(raw.std()) if len(raw) > 1 else 1.0
    tokens = int(ro.attention_mask.sum())
    if not std > 1e-6:
        raise ValueError(f"the reward model scores all {len(raw)} policy samples alike ({mean:.4g}): it "
                         "cannot be normalised; train it longer or check its data")
    reward_model.set_normalisation(mean, std)
    return {"raw_mean": mean, "raw_std": std, "samples": len(raw), "forward_tokens": tokens}


def train_reward_model(model, tokenizer, config: RewardModelConfig, *, reference_policy=None,
                       device: str = "cpu", progress: bool = True, eval_prompts: int = 0,
                       loss_fn=None) -> StageResult:
    """Train a reward model on `config.n_prompts` labelled rankings of notes responses.

    `model`: a `RewardModel`, or a causal LM to wrap in one (a fresh zero head). With a
    `reference_policy` (the SFT model PPO will start from), the scores are then normalised on its
    samples (`normalise`). FLOPs (training, and the normalisation's sampling and scoring) are in
    `info["flops"]`; with `eval_prompts` > 0, the held-out metrics (`evaluate_reward_model`) in
    `info["eval"]`. `loss_fn(rewards, chosen, rejected, group)` replaces `ranking_loss` (Lab 02
    trains with the student's).
    """
    loss_fn = loss_fn or ranking_loss
    rm = model if isinstance(model, RewardModel) else RewardModel(model)
    examples = get_task(PREFERENCE_DOMAIN).sample(config.n_prompts, split="train", seed=config.seed)
    rankings = preference_rankings(examples, responses_per_prompt=config.responses_per_prompt, seed=config.seed,
                                   temperature=config.label_temperature, criterion=config.criterion)
    rows = ranking_rows(tokenizer, rankings, context=rm.config.max_position_embeddings)

    def step(model, batch):
        rewards = model(batch["input_ids"], batch["attention_mask"])
        loss = loss_fn(rewards, batch["chosen"], batch["rejected"], batch["group"])
        chosen, rejected = rewards[batch["chosen"]], rewards[batch["rejected"]]
        return loss, {"pair_accuracy": pair_right(chosen, rejected).mean(), "margin": (chosen - rejected).mean()}

    result = train_offline(
        rm, cycle_batches(rows, config.prompts_per_batch, lambda b: collate_rankings(b, tokenizer.pad_token_id),
                          seed=config.seed),
        step, steps=config.steps, stage="reward_model", device=device,
        optim=OptimConfig(lr=config.lr, warmup_steps=config.warmup_steps), progress=progress)
    flops = 6.0 * count_parameters(rm) * result.info["tokens"]
    result.info.update(prompts=len(rows), pairs=sum(len(r["pairs"]) for r in rows))
    if reference_policy is not None:
        norm = normalise(rm, reference_policy, tokenizer, n=config.normalise_samples,
                         max_new_tokens=config.normalise_tokens, seed=config.seed)
        flops += 2.0 * (count_parameters(reference_policy) + count_parameters(rm)) * norm["forward_tokens"]
        result.info["normalisation"] = norm
    result.info["flops"] = flops
    if eval_prompts:
        result.info["eval"] = evaluate_reward_model(rm, tokenizer, n_prompts=eval_prompts,
                                                    responses_per_prompt=config.responses_per_prompt,
                                                    temperature=config.label_temperature, seed=config.seed,
                                                    criterion=config.criterion)
    return result
