"""The lab 02 (reward model), lab 03 (PPO) and lab 04 (DPO) graders: an independent straightforward solution gets
full marks, and the registry adds up. (The references and stubs: tests/test_grading_rl.py; every
wrong version is checked alive and named in tests/test_grading.py.)"""
import pytest
import torch
import torch.nn.functional as F

from minimopd import grading
from minimopd.grading import LABS, check

LAB02 = [gf.name for gf in LABS["lab02"]]
LAB03 = [gf.name for gf in LABS["lab03"]]
LAB04 = [gf.name for gf in LABS["lab04"]]
GRADED = [("lab02", n) for n in LAB02] + [("lab03", n) for n in LAB03] + [("lab04", n) for n in LAB04]


def bradley_terry_loss(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def ranking_loss(rewards, chosen, rejected, group):
    per_pair = bradley_terry_loss(rewards[chosen], rejected_rewards=rewards[rejected])
    means = [per_pair[group == g].mean() for g in range(int(group.max()) + 1)]
    return torch.stack(means).mean()


def pairwise_accuracy(chosen_rewards, rejected_rewards):
    n = len(chosen_rewards)
    right = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_rewards.tolist(),
                                                                        rejected_rewards.tolist()))
    return right / n


def noise_ceiling(gold_chosen, gold_rejected, temperature):
    total = 0.0
    for c, r in zip(gold_chosen.tolist(), gold_rejected.tolist()):
        if temperature == 0:
            p = 1.0 if c > r else 0.0 if c < r else 0.5
        else:
            p = float(torch.sigmoid(torch.tensor((c - r) / temperature, dtype=torch.float64)))
        total += max(p, 1 - p)
    return total / len(gold_chosen)


def kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, beta):
    rewards = -beta * (logprobs - ref_logprobs) * mask
    for b in range(mask.shape[0]):
        where = mask[b].nonzero()
        if len(where):
            rewards[b, int(where[-1])] += scores[b]
    return rewards


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        nxt_v, nxt_a = 0.0, 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[b, t] == 0:
                nxt_v, nxt_a = 0.0, 0.0
                continue
            delta = rewards[b, t] + gamma * nxt_v - values[b, t]
            adv[b, t] = delta + gamma * lam * nxt_a
            nxt_v, nxt_a = values[b, t], adv[b, t]
    return adv, (adv + values) * mask


def ppo_clip_loss(logprobs, old_logprobs, advantages, eps=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    return -torch.min(advantages * ratio, advantages * ratio.clamp(1 - eps, 1 + eps))


def value_loss(values, old_values, returns, clip=0.2):
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)


def sequence_logps(logits, input_ids, mask):
    out = []
    for b in range(logits.shape[0]):
        total = logits.new_zeros(())
        for t in range(1, logits.shape[1]):
            if mask[b, t]:
                total = total + torch.log_softmax(logits[b, t - 1], -1)[input_ids[b, t]]
        out.append(total)
    return torch.stack(out)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing=0.0):
    logits = beta * ((policy_chosen - policy_rejected) - (ref_chosen - ref_rejected))
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return (h - 1 / (2 * beta)) ** 2


SOLUTIONS = {"sequence_logps": sequence_logps, "dpo_loss": dpo_loss, "ipo_loss": ipo_loss,
             "bradley_terry_loss": bradley_terry_loss, "ranking_loss": ranking_loss,
             "pairwise_accuracy": pairwise_accuracy, "noise_ceiling": noise_ceiling,
             "kl_penalized_rewards": kl_penalized_rewards, "gae": gae, "ppo_clip_loss": ppo_clip_loss,
             "value_loss": value_loss}


def test_registry():
    assert LAB02 == ["bradley_terry_loss", "ranking_loss", "pairwise_accuracy", "noise_ceiling"]
    assert LAB03 == ["kl_penalized_rewards", "gae", "ppo_clip_loss", "value_loss"]
    assert LAB04 == ["sequence_logps", "dpo_loss", "ipo_loss"]
    for lab in ("lab02", "lab03", "lab04"):
        assert sum(gf.points for gf in LABS[lab]) == 10, lab


@pytest.mark.parametrize("lab,name", GRADED)
@pytest.mark.parametrize("hidden", [False, True])
def test_an_independent_solution_passes(lab, name, hidden, capsys):
    """(The references against themselves and the stubs: tests/test_grading_rl.py.)"""
    gf = grading.find(name, lab)
    assert check(name, SOLUTIONS[name], lab=lab, hidden=hidden) == gf.points
    assert "FAILED" not in capsys.readouterr().out


def test_unstable_bradley_terry_gets_the_logsigmoid_hint(capsys):
    def unstable(chosen_rewards, rejected_rewards):
        return -torch.log(torch.sigmoid(chosen_rewards - rejected_rewards))

    with pytest.raises(AssertionError):
        check("bradley_terry_loss", unstable, lab="lab02")
    out = capsys.readouterr().out
    assert "large gaps, both ways ... FAILED" in out and "underflows to -inf" in out


def test_length_normalised_sequence_logps_gets_the_sum_hint(capsys):
    def mean_logps(logits, input_ids, mask):
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        return (lp * mask[:, 1:]).sum(1) / mask[:, 1:].sum(1).clamp(min=1)

    with pytest.raises(AssertionError):
        check("sequence_logps", mean_logps, lab="lab04")
    assert "SUM of the response's token log-probs" in capsys.readouterr().out


def test_ipo_with_beta_inside_gets_the_target_hint(capsys):
    def scaled(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
        return (beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)) - 0.5) ** 2

    with pytest.raises(AssertionError):
        check("ipo_loss", scaled, lab="lab04")
    assert "without beta" in capsys.readouterr().out
