"""The lab 07 (on-policy distillation) grader: its references pass, a stub is "not implemented",
and a student's straightforward solution, written here independently of the library, gets full
marks (so the reference adapters around `kl.token_reverse_kl`, which works on shifted tensors,
say what the lab asks)."""
import pytest
import torch

from minimopd import grading
from minimopd.grading import LABS, NOT_IMPLEMENTED, check

LAB07 = [gf.name for gf in LABS["lab07"]]


def opd_advantages(student_logprobs, teacher_logprobs, mask):
    return ((teacher_logprobs - student_logprobs) * mask).detach()


def full_reverse_kl(student_logits, teacher_logprobs):
    logp = torch.log_softmax(student_logits, dim=-1)
    return (logp.exp() * (logp - teacher_logprobs)).sum(-1)


def topk_reverse_kl(student_logits, support_ids, teacher_support_logprobs, tail=True):
    s = torch.log_softmax(student_logits, dim=-1).gather(-1, support_ids)
    t = teacher_support_logprobs
    if tail:
        def bucket(x):
            return torch.log((1 - x.exp().sum(-1, keepdim=True)).clamp(min=1e-6))
        s, t = torch.cat([s, bucket(s)], -1), torch.cat([t, bucket(t)], -1)
    else:
        s, t = s - s.logsumexp(-1, keepdim=True), t - t.logsumexp(-1, keepdim=True)
    return (s.exp() * (s - t)).sum(-1)


SOLUTIONS = {"opd_advantages": opd_advantages, "full_reverse_kl": full_reverse_kl,
             "topk_reverse_kl": topk_reverse_kl}


def test_registry():
    assert LAB07 == ["opd_advantages", "full_reverse_kl", "topk_reverse_kl"]
    assert sum(gf.points for gf in LABS["lab07"]) == 10


@pytest.mark.parametrize("name", LAB07)
@pytest.mark.parametrize("hidden", [False, True])
def test_reference_and_an_independent_solution_pass(name, hidden, capsys):
    gf = grading.find(name, "lab07")
    assert check(name, gf.resolve(), lab="lab07", hidden=hidden) == gf.points
    assert check(name, SOLUTIONS[name], lab="lab07", hidden=hidden) == gf.points
    assert "FAILED" not in capsys.readouterr().out


@pytest.mark.parametrize("name", LAB07)
def test_stub_is_not_implemented(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError) as info:
        check(name, stub, lab="lab07")
    assert str(info.value).startswith(f"{name}: {NOT_IMPLEMENTED}")


def test_full_kl_of_a_student_that_forgets_the_gradient_fails(capsys):
    def detached(student_logits, teacher_logprobs):
        return full_reverse_kl(student_logits.detach(), teacher_logprobs)

    with pytest.raises(AssertionError):
        check("full_reverse_kl", detached, lab="lab07")
    assert "FAILED" in capsys.readouterr().out
