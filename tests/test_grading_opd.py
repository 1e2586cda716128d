"""The lab 07 (on-policy distillation) grader against a student's straightforward solution,
written here independently of the library: it gets full marks, so the reference adapters around
`kl.token_reverse_kl` (which works on shifted tensors) say what the lab asks. The references,
stubs and registry are tested with labs 05/06 in tests/test_grading_rl.py."""
import pytest
import torch

from minimopd import grading
from minimopd.grading import LABS, check

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


@pytest.mark.parametrize("name", LAB07)
@pytest.mark.parametrize("hidden", [False, True])
def test_an_independent_solution_passes(name, hidden, capsys):
    """(The references against themselves and the stubs: tests/test_grading_rl.py.)"""
    gf = grading.find(name, "lab07")
    assert check(name, SOLUTIONS[name], lab="lab07", hidden=hidden) == gf.points
    assert "FAILED" not in capsys.readouterr().out


def test_full_kl_of_a_student_that_forgets_the_gradient_fails(capsys):
    def detached(student_logits, teacher_logprobs):
        return full_reverse_kl(student_logits.detach(), teacher_logprobs)

    with pytest.raises(AssertionError):
        check("full_reverse_kl", detached, lab="lab07")
    assert "FAILED" in capsys.readouterr().out
