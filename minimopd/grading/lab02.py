"""Lab 02 (reward model): the Bradley-Terry loss, InstructGPT's per-prompt ranking loss, the
pairwise accuracy of a reward model and the ceiling its labels' noise allows.

    bradley_terry_loss(chosen_rewards, rejected_rewards) -> (P,)                  3 points
    ranking_loss(rewards, chosen, rejected, group) -> scalar                     3 points
    pairwise_accuracy(chosen_rewards, rejected_rewards) -> float                 2 points
    noise_ceiling(gold_chosen, gold_rejected, temperature) -> float              2 points

The references are the library's (`losses.bradley_terry_loss`, `stages.reward_model.ranking_loss`,
`stages.reward_model.pairwise_metrics`); the classic slips are the wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .engine import LABS, TRAIN_BATCH, Case, GradedFunction, _rng, _skip


# --------------------------------------------------------------------------- bradley_terry_loss

def _reference_bt(chosen_rewards, rejected_rewards):
    from ..losses import bradley_terry_loss
    return bradley_terry_loss(chosen_rewards, rejected_rewards)


def _scores(g, n, dtype=torch.float32, scale=1.5):
    return (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)


def _bt_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("random rewards", (_scores(g, n), _scores(g, n))) for n in (r.randint(2, 9) for _ in range(3))]
    cases.append(Case("equal rewards", (torch.tensor([0.3, -1.0]), torch.tensor([0.3, -1.0])),
                      hint="a pair the model cannot tell apart costs log 2 = 0.693"))
    cases.append(Case("large gaps, both ways", (torch.tensor([60.0, -60.0, 0.0]), torch.tensor([0.0, 0.0, 200.0])),
                      hint="log(sigmoid(x)) underflows to log(0) = -inf for x below about -90 in float32 (-17 in "
                           "float16): use F.logsigmoid, which computes it stably"))
    cases.append(Case("float64 input", (_scores(g, 5, torch.float64), _scores(g, 5, torch.float64)),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training batch of pairs", (_scores(g, 6 * TRAIN_BATCH), _scores(g, 6 * TRAIN_BATCH))))
    return cases


BT_WRONG = (
    (lambda c, r: -F.logsigmoid(r - c), "the sign: the chosen response should score higher, "
                                        "L = -log sigma(r_chosen - r_rejected)"),
    (lambda c, r: F.logsigmoid(c - r), "minimise the negative log-likelihood: L = -log sigma(r_w - r_l) >= 0"),
    (lambda c, r: -F.logsigmoid(c - r).mean(), "return one loss per pair, shape (P,); the caller averages"),
    (lambda c, r: 1 - torch.sigmoid(c - r), "the loss is the negative log of the probability sigma(r_w - r_l), "
                                            "not one minus it"),
    (lambda c, r: -torch.log(torch.sigmoid(c - r)),
     "log(sigmoid(x)) underflows to -inf for large negative x: use F.logsigmoid(x)"),
)


# --------------------------------------------------------------------------- ranking_loss

def _rankings(r, g, prompts, *, dtype=torch.float32):
    """`prompts` prompts with 2-5 responses each and a random subset (at least one) of their pairs."""
    rewards, chosen, rejected, group, offset = [], [], [], [], 0
    for p in range(prompts):
        k = r.randint(2, 5)
        pairs = [(a, b) for a in range(k) for b in range(k) if a != b and r.random() < 0.4] or [(0, 1)]
        for a, b in pairs:
            chosen.append(offset + a)
            rejected.append(offset + b)
            group.append(p)
        offset += k
    rewards = _scores(g, offset, dtype)
    return rewards, torch.tensor(chosen), torch.tensor(rejected), torch.tensor(group)


def _ranking_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("prompts with different numbers of pairs", _rankings(r, g, r.randint(2, 5))) for _ in range(3)]
    cases.append(Case("one prompt", _rankings(r, g, 1)))
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0])
    cases.append(Case("one prompt with three pairs, one with one",
                      (rewards, torch.tensor([0, 0, 1, 3]), torch.tensor([1, 2, 2, 4]), torch.tensor([0, 0, 0, 1])),
                      hint="average each prompt's pairs first, then the prompts: the lone pair weighs as much as "
                           "the three together"))
    cases.append(Case("float64 input", _rankings(r, g, 3, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training batch of rankings", _rankings(r, g, TRAIN_BATCH // 4)))
    return cases


def _pair_losses(rewards, chosen, rejected):
    return -F.logsigmoid(rewards[chosen] - rewards[rejected])


def _group_sums(per_pair, group):
    n = int(group.max()) + 1
    sums = per_pair.new_zeros(n).index_add(0, group, per_pair)
    counts = per_pair.new_zeros(n).index_add(0, group, torch.ones_like(per_pair))
    return sums, counts


RANKING_WRONG = (
    (lambda w, c, r, g: _pair_losses(w, c, r).mean(),
     "a mean over all pairs lets a prompt with many pairs outweigh one with few: average each prompt's pairs, "
     "then average over prompts"),
    (lambda w, c, r, g: _group_sums(_pair_losses(w, c, r), g)[0].mean(),
     "divide each prompt's sum by its number of pairs: the mean over the prompt's pairs"),
    (lambda w, c, r, g: _pair_losses(w, c, r).sum(), "a mean, not a sum: over pairs within a prompt, then over prompts"),
    (lambda w, c, r, g: -F.logsigmoid(w[r] - w[c]).mean() if int(g.max()) == 0 else _skip(),
     "chosen and rejected are swapped: L = -log sigma(r[chosen] - r[rejected])"),
)


# --------------------------------------------------------------------------- pairwise_accuracy

def _reference_accuracy(chosen_rewards, rejected_rewards):
    right = (chosen_rewards > rejected_rewards).double() + 0.5 * (chosen_rewards == rejected_rewards).double()
    return float(right.mean())


def _accuracy_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("random scores", (_scores(g, n), _scores(g, n))) for n in (r.randint(3, 12) for _ in range(3))]
    cases.append(Case("ties", (torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([1.0, 1.0, 2.0, 4.0])),
                      hint="a tie is half right: the model picks neither side, a coin would be right half the time"))
    cases.append(Case("all wrong", (torch.tensor([0.0, -1.0]), torch.tensor([1.0, 0.0]))))
    cases.append(Case("a held-out set (1,800 pairs)", (_scores(g, 1800), _scores(g, 1800))))
    return cases


ACCURACY_WRONG = (
    (lambda c, r: float((c > r).float().mean()), "count a tie as half right (0.5), not as wrong"),
    (lambda c, r: float((c >= r).float().mean()), "count a tie as half right (0.5), not as right"),
    (lambda c, r: float((c > r).sum() + 0.5 * (c == r).sum()), "a fraction of the pairs: divide by their number"),
    (lambda c, r: float((c < r).float().mean() + 0.5 * (c == r).float().mean()),
     "right means the chosen response scores higher than the rejected one"),
)


# --------------------------------------------------------------------------- noise_ceiling

def _reference_ceiling(gold_chosen, gold_rejected, temperature):
    from ..stages.reward_model import pairwise_metrics
    return pairwise_metrics(gold_chosen, gold_rejected, gold_chosen, gold_rejected, temperature)["noise_ceiling"]


def _gold(g, n, dtype=torch.float32):
    return torch.rand(n, generator=g, dtype=torch.float64).to(dtype)


def _ceiling_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("random gold scores", (_gold(g, n), _gold(g, n), r.choice([0.05, 0.1, 0.3])))
             for n in (r.randint(3, 12) for _ in range(3))]
    cases.append(Case("equal gold: a coin flip", (torch.tensor([0.5, 0.2]), torch.tensor([0.5, 0.2]), 0.1),
                      hint="equal gold scores: the labeller picks each side with p = 1/2, and no one predicts a "
                           "coin better than half the time"))
    cases.append(Case("a noiseless labeller (temperature 0)", (torch.tensor([0.9, 0.4, 0.3]),
                                                               torch.tensor([0.1, 0.4, 0.8]), 0.0),
                      hint="temperature 0: the better response always wins (p = 1 or 0; 1/2 on a tie); do not "
                           "divide by 0"))
    cases.append(Case("the training labeller on 1,800 pairs", (_gold(g, 1800), _gold(g, 1800), 0.1)))
    return cases


def _p(c, r, t):
    return torch.sigmoid((c.double() - r.double()) / t)


CEILING_WRONG = (
    (lambda c, r, t: float(_p(c, r, t).mean()) if t > 0 else _skip(),
     "the best predictor takes the likelier side of each pair: its accuracy there is max(p, 1 - p), not p"),
    (lambda c, r, t: float(max(_p(c, r, t).mean(), 1 - _p(c, r, t).mean())) if t > 0 else _skip(),
     "take max(p, 1 - p) pair by pair, then the mean: each pair has its own likelier side"),
    (lambda c, r, t: float(torch.maximum(_p(c, r, 1.0), 1 - _p(c, r, 1.0)).mean()) if t not in (0, 1) else _skip(),
     "divide the gold difference by the labeller's temperature: p = sigmoid((g_chosen - g_rejected) / T)"),
)


LABS["lab02"] = [
    GradedFunction("bradley_terry_loss", _reference_bt, _bt_cases, points=3, grad_wrt=(0, 1), wrong=BT_WRONG,
                   library=("minimopd.losses.bradley_terry_loss",),
                   nan_hint="log(sigmoid(x)) is -inf for large negative x: use F.logsigmoid",
                   hint="L = -log sigma(r_chosen - r_rejected) per pair, with F.logsigmoid"),
    GradedFunction("ranking_loss", "minimopd.stages.reward_model.ranking_loss", _ranking_cases, points=3,
                   grad_wrt=(0,), wrong=RANKING_WRONG,
                   hint="per pair -log sigma(r[chosen] - r[rejected]); the mean of each group's pairs "
                        "(index_add or a loop over groups); the mean of those over the groups"),
    GradedFunction("pairwise_accuracy", _reference_accuracy, _accuracy_cases, points=2, wrong=ACCURACY_WRONG,
                   library=("minimopd.stages.reward_model.pairwise_metrics",),
                   hint="the mean over pairs of 1 (chosen scores higher), 0.5 (a tie) or 0, as a Python float"),
    GradedFunction("noise_ceiling", _reference_ceiling, _ceiling_cases, points=2, wrong=CEILING_WRONG,
                   library=("minimopd.stages.reward_model.pairwise_metrics",),
                   hint="p = sigmoid((gold_chosen - gold_rejected) / T) (with T = 0: 1, 0 or 1/2); the mean of "
                        "max(p, 1 - p), as a Python float"),
]
