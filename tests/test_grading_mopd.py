"""The lab 08 (MOPD) and lab 09 (support overlap) graders against a student's straightforward solutions, written here
independently of the library: each gets full marks on the visible and hidden cases, so the
references (`signals.route_rows`, `advantages.mopd_advantages`, `losses.truncated_is_loss`
reduced per sequence) say what the lab asks. The references, stubs and registry are tested with
labs 05-07 in tests/test_grading_rl.py; every known wrong version in tests/test_grading.py."""
import pytest
import torch

from minimopd import grading
from minimopd.grading import LABS, check


def route(names, teachers):
    groups = {}
    for i, name in enumerate(names):
        if name not in teachers:
            raise KeyError(f"no teacher for domain {name!r}; the teachers are {sorted(teachers)}")
        groups.setdefault(name, []).append(i)
    return groups


def mopd_advantages(student_logprobs, teacher_logprobs, mask, rewards, group_size, row_weights=None, alpha=0.0):
    adv = teacher_logprobs - student_logprobs
    if row_weights is not None:
        adv = adv * row_weights[:, None]
    g = rewards.view(-1, group_size)
    spread = g.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(g)
    outcome = ((g - g.mean(1, keepdim=True)) / (spread + 1e-4)).reshape(-1, 1)
    return ((adv + alpha * outcome) * mask).detach()


def mopd_loss(logprobs, sampler_logprobs, advantages, mask, low=0.8, high=1.2):
    ratio = (logprobs.detach() - sampler_logprobs).exp()
    weight = ratio * ((ratio >= low) & (ratio <= high))
    per_token = -weight * advantages * logprobs * mask
    return (per_token.sum(1) / mask.sum(1)).mean()


def test_a_loss_whose_weight_keeps_its_gradient_fails(capsys):
    """The importance weight is a constant: differentiating through it changes the gradient
    (not the value), and the grader compares gradients too."""
    def undetached(logprobs, sampler_logprobs, advantages, mask, low=0.8, high=1.2):
        ratio = (logprobs - sampler_logprobs).exp()
        weight = ratio * ((ratio >= low) & (ratio <= high))
        return ((-weight * advantages * logprobs * mask).sum(1) / mask.sum(1)).mean()

    with pytest.raises(AssertionError):
        check("mopd_loss", undetached, lab="lab08")
    assert "FAILED" in capsys.readouterr().out


def test_the_router_error_names_the_domain_and_the_teachers():
    from minimopd.signals import route_rows
    with pytest.raises(KeyError, match=r"no teacher for domain 'count' \(rows \[1, 3\]\); the teachers are add, sort"):
        route_rows(["add", "count", "sort", "count"], {"add", "sort"})
    assert route_rows([], ["add"]) == {}
    assert torch.equal(torch.tensor(route_rows(["a", "b", "a"], "ab")["a"]), torch.tensor([0, 2]))


# --------------------------------------------------------------------------- lab09 (support overlap)

def support_overlap(student_logprobs, teacher_logprobs, token_ids, mask, k=8):
    p_s = student_logprobs.exp()
    kl = (p_s * (student_logprobs - teacher_logprobs)).sum(-1)
    t_tok = teacher_logprobs.gather(-1, token_ids[..., None]).squeeze(-1)
    s_tok = student_logprobs.gather(-1, token_ids[..., None]).squeeze(-1)
    kth = teacher_logprobs.topk(min(k, teacher_logprobs.shape[-1]), -1).values[..., -1]
    inside = (t_tok >= kth).float()
    n = mask.sum()
    return {"reverse_kl": float((kl * mask).sum() / n), "teacher_logprob": float((t_tok * mask).sum() / n),
            "student_logprob": float((s_tok * mask).sum() / n), "in_topk": float((inside * mask).sum() / n)}


def compute_to_reach(flops, accuracy, target, window=10):
    means = [sum(accuracy[i + 1 - window:i + 1]) / window for i in range(window - 1, len(accuracy))]
    hits = [i for i, m in enumerate(means) if m >= target]
    return float(flops[hits[0] + window - 1]) if hits else float("nan")


def gap_recovery(start, student, teacher):
    return (student - start) / (teacher - start) if teacher > start else float("nan")


# --------------------------------------------------------------------------- both labs

SOLUTIONS = {"lab08": {"route": route, "mopd_advantages": mopd_advantages, "mopd_loss": mopd_loss},
             "lab09": {"support_overlap": support_overlap, "compute_to_reach": compute_to_reach,
                       "gap_recovery": gap_recovery}}


@pytest.mark.parametrize("lab,name", [(lab, gf.name) for lab in SOLUTIONS for gf in LABS[lab]])
@pytest.mark.parametrize("hidden", [False, True])
def test_an_independent_solution_passes(lab, name, hidden, capsys):
    gf = grading.find(name, lab)
    assert check(name, SOLUTIONS[lab][name], lab=lab, hidden=hidden) == gf.points
    assert "FAILED" not in capsys.readouterr().out
