"""Lab 04 (DPO): a response's log-probability as a whole, the DPO loss (with conservative label
smoothing) and the IPO loss.

    sequence_logps(logits, input_ids, mask) -> (B,)                                       3 points
    dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, ls) -> (B,)  4 points
    ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> (B,)      3 points

The references are the library's (`losses.token_logprobs` + `losses.sequence_logps`,
`losses.dpo_loss`); the classic slips are the wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .engine import LABS, TRAIN_BATCH, TRAIN_LEN, Case, GradedFunction, _response_mask, _rng, _skip, _vocab


# --------------------------------------------------------------------------- sequence_logps

def _reference_sequence_logps(logits, input_ids, mask):
    from ..losses import sequence_logps, token_logprobs
    return sequence_logps(token_logprobs(logits, input_ids), mask)


def _pair_mask(r, B: int, T: int) -> torch.Tensor:
    """(B, T) response masks of chat examples: token-aligned, so column 0 (the first prompt token)
    is never in one."""
    return _response_mask(r, B, T, first=1)


def _logits_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def make(B, T, V, *, scale=2.0, dtype=torch.float32, mask=None):
        logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
        ids = torch.randint(V, (B, T), generator=g)
        return (logits, ids, _pair_mask(r, B, T) if mask is None else mask)

    cases = [Case("random shapes", make(r.randint(2, 4), r.randint(3, 10), r.randint(3, 12))) for _ in range(3)]
    empty = _pair_mask(r, 3, 6)
    empty[1] = 0.0
    cases.append(Case("a row with no response tokens", make(3, 6, 5, mask=empty),
                      hint="a row whose mask is all zero has log-probability sum 0 (an empty sum)"))
    cases.append(Case("float64 input", make(2, r.randint(3, 8), 7, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("large logits", make(2, r.randint(4, 8), 9, scale=400.0),
                      hint="use torch.log_softmax (numerically stable), not softmax(...).log()"))
    V, T = _vocab(), TRAIN_LEN
    long = torch.zeros(4, T)
    long[:, 2:] = 1.0
    cases.append(Case("long responses (158 tokens)", make(4, T, V, scale=0.5, mask=long),
                      hint="add the tokens' log-probs; multiplying their probabilities underflows to 0 long before "
                           "a response ends (1/105 to the 158th power is below 1e-300)"))
    cases.append(Case("a training batch of pairs: real vocabulary", make(TRAIN_BATCH, r.randint(40, 90), V)))
    return cases


def _token_lp(logits, ids):
    from ..losses import token_logprobs
    return token_logprobs(logits, ids)


def _unshifted(logits, ids, mask):
    lp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(1)


def _mask_one_left(logits, ids, mask):
    lp = _token_lp(logits, ids)
    return (lp[:, 1:] * mask[:, :-1]).sum(1)


SEQUENCE_WRONG = (
    (_unshifted, "off by one: logits at position t-1 predict token t, so score input_ids[:, 1:] with "
                 "logits[:, :-1]"),
    (_mask_one_left, "the mask is token-aligned: mask[:, t] marks token t, whose log-prob comes from "
                     "logits[:, t-1]; pair the shifted log-probs with mask[:, 1:]"),
    (lambda logits, ids, mask: (_token_lp(logits, ids) * mask).sum(1) / mask.sum(1).clamp(min=1),
     "DPO compares whole responses: the SUM of the response's token log-probs, not their mean (a mean "
     "is length-normalised, SimPO's choice, and changes the objective)"),
    (lambda logits, ids, mask: _token_lp(logits, ids).sum(1),
     "only the response counts: multiply by the mask before summing (the prompt is the same for both "
     "responses of a pair, but its log-probs are not the response's)"),
    (lambda logits, ids, mask: (_token_lp(logits, ids).exp() * mask).sum(1),
     "sum log-probabilities (log_softmax), not probabilities"),
    (lambda logits, ids, mask: (_token_lp(logits, ids) * mask).sum(),
     "return one log-probability per row, shape (B,), not their total"),
)


def _diagnose_sequence(case: Case, expected, got) -> str | None:
    if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[0] == expected.shape[0]:
        return "sum over the tokens (dim=1): one number per row, shape (B,)"
    return None


# --------------------------------------------------------------------------- dpo_loss / ipo_loss

def _reference_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing=0.0):
    from ..losses import dpo_loss
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta,
                    label_smoothing=label_smoothing)[0]


def _reference_ipo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    from ..losses import dpo_loss
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta, loss_type="ipo")[0]


def _logps(g, n, dtype=torch.float32, *, drift=2.0):
    """Sequence log-probs of n pairs as a 60-token note's would be: a reference around -60 +- 15 and
    a policy that moved a few nats from it."""
    ref_c = -60 + 15 * torch.randn(n, generator=g, dtype=torch.float64)
    ref_r = -60 + 15 * torch.randn(n, generator=g, dtype=torch.float64)
    pol_c = ref_c + drift * torch.randn(n, generator=g, dtype=torch.float64)
    pol_r = ref_r + drift * torch.randn(n, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype) for t in (pol_c, pol_r, ref_c, ref_r))


def _pref_cases(seed: int, *, smoothing: bool) -> list[Case]:
    r, g = _rng(seed)
    tail = (lambda: (r.choice([0.1, 0.2, 0.3]),)) if smoothing else (lambda: ())
    cases = [Case("random pairs", (*_logps(g, n), beta)) for n, beta in
             ((r.randint(2, 9), r.choice([0.03, 0.1, 0.5])) for _ in range(3))]
    cases.append(Case("the policy is the reference", (*(torch.tensor([-40.0, -75.5]) for _ in range(4)), 0.1),
                      hint="before training h = 0: DPO's loss is log 2 = 0.693 per pair, IPO's (1 / (2 beta))^2"))
    cases.append(Case("beta = 1", (*_logps(g, 4), 1.0)))
    if smoothing:
        cases.extend(Case("conservative DPO (label smoothing)", (*_logps(g, n), beta, *tail()),
                          hint="with label smoothing ls: L = -(1 - ls) log sigma(beta h) - ls log sigma(-beta h)")
                     for n, beta in ((r.randint(2, 9), r.choice([0.1, 0.5])) for _ in range(2)))
        cases.append(Case("large margins, both ways", (torch.tensor([0.0, -900.0]), torch.tensor([-900.0, 0.0]),
                                                       torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), 0.5),
                          hint="beta h = -450 here: log(sigmoid(x)) underflows to -inf for x below about -90 "
                               "in float32; use F.logsigmoid"))
    else:
        pc, pr, ref_c, ref_r = (torch.tensor([-30.0, -50.0]), torch.tensor([-40.0, -44.0]),
                                torch.tensor([-33.0, -52.0]), torch.tensor([-38.0, -41.0]))
        cases.append(Case("at the target margin", (pc, pr, ref_c, ref_r, 0.1),
                          hint="h = 5 = 1 / (2 * 0.1) on both pairs: IPO's loss is 0 there, and grows on either "
                               "side"))
    cases.append(Case("float64 input", (*_logps(g, 5, torch.float64), 0.1, *tail()),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training batch of pairs", (*_logps(g, TRAIN_BATCH // 2, drift=6.0), 0.1, *tail())))
    return cases


def _dpo_cases(seed: int) -> list[Case]:
    return _pref_cases(seed, smoothing=True)


def _ipo_cases(seed: int) -> list[Case]:
    return _pref_cases(seed, smoothing=False)


def _h(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


def _ls_only(fn):
    """A wrong version about label smoothing: only meaningful when it is not 0."""
    return lambda pc, pr, rc, rr, beta, ls=0.0: fn(pc, pr, rc, rr, beta, ls) if ls else _skip()


DPO_WRONG = (
    (lambda pc, pr, rc, rr, beta, ls=0.0: -F.logsigmoid(-beta * _h(pc, pr, rc, rr)) if not ls else _skip(),
     "the sign: the chosen response's log-ratio minus the rejected one's, L = -log sigma(beta h)"),
    (lambda pc, pr, rc, rr, beta, ls=0.0: -F.logsigmoid(_h(pc, pr, rc, rr)) if not ls else _skip(),
     "multiply the log-ratio difference by beta: L = -log sigma(beta h)"),
    (lambda pc, pr, rc, rr, beta, ls=0.0: -F.logsigmoid(beta * (pc - pr)) if not ls else _skip(),
     "subtract the reference's log-probs: h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]"),
    (lambda pc, pr, rc, rr, beta, ls=0.0: -torch.log(torch.sigmoid(beta * _h(pc, pr, rc, rr))) if not ls else _skip(),
     "log(sigmoid(x)) underflows to -inf for large negative x: use F.logsigmoid(x)"),
    (_ls_only(lambda pc, pr, rc, rr, beta, ls: -F.logsigmoid(beta * _h(pc, pr, rc, rr))),
     "use label_smoothing: with probability ls the label is flipped, L = -(1 - ls) log sigma(beta h) - "
     "ls log sigma(-beta h)"),
    (_ls_only(lambda pc, pr, rc, rr, beta, ls: -ls * F.logsigmoid(beta * _h(pc, pr, rc, rr))
              - (1 - ls) * F.logsigmoid(-beta * _h(pc, pr, rc, rr))),
     "ls is the share of flipped labels (small): (1 - ls) weighs the label as given, ls the flipped one"),
    (_ls_only(lambda pc, pr, rc, rr, beta, ls: -(1 - ls) * F.logsigmoid(beta * _h(pc, pr, rc, rr))
              + ls * F.logsigmoid(-beta * _h(pc, pr, rc, rr))),
     "both terms are negative log-likelihoods: L = -(1 - ls) log sigma(beta h) MINUS ls log sigma(-beta h)"),
    (lambda pc, pr, rc, rr, beta, ls=0.0: _reference_dpo(pc, pr, rc, rr, beta, ls).mean(),
     "return one loss per pair, shape (B,); the caller averages"),
)


IPO_WRONG = (
    (lambda pc, pr, rc, rr, beta: (beta * _h(pc, pr, rc, rr) - 0.5) ** 2,
     "IPO's h is the log-ratio difference without beta; beta sets the target: (h - 1 / (2 beta))^2"),
    (lambda pc, pr, rc, rr, beta: (_h(pc, pr, rc, rr) - 1 / beta) ** 2,
     "the target margin is 1 / (2 beta), not 1 / beta"),
    (lambda pc, pr, rc, rr, beta: (_h(pc, pr, rc, rr) - beta / 2) ** 2,
     "the target margin is 1 / (2 beta): a larger beta (tau in the paper) asks for a smaller margin"),
    (lambda pc, pr, rc, rr, beta: (_h(pc, pr, rc, rr) + 1 / (2 * beta)) ** 2,
     "the chosen response should win by the margin: (h - 1 / (2 beta))^2"),
    (lambda pc, pr, rc, rr, beta: (pc - pr - 1 / (2 * beta)) ** 2,
     "subtract the reference's log-probs: h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]"),
    (lambda pc, pr, rc, rr, beta: ((_h(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2).mean(),
     "return one loss per pair, shape (B,); the caller averages"),
)


LABS["lab04"] = [
    GradedFunction("sequence_logps", _reference_sequence_logps, _logits_cases, points=3, grad_wrt=(0,),
                   wrong=SEQUENCE_WRONG, diagnose=_diagnose_sequence,
                   library=("minimopd.losses.sequence_logps", "minimopd.losses.token_logprobs",
                            "minimopd.models.sequence_logprobs"),
                   nan_hint="log(softmax(x)) or log(prod(p)) reaches log(0) = -inf: use torch.log_softmax and "
                            "sum the log-probs",
                   hint="log_softmax(logits[:, :-1]) gathered at input_ids[:, 1:], times mask[:, 1:], summed over "
                        "dim 1"),
    GradedFunction("dpo_loss", _reference_dpo, _dpo_cases, points=4, grad_wrt=(0, 1), wrong=DPO_WRONG,
                   library=("minimopd.losses.dpo_loss",),
                   nan_hint="log(sigmoid(x)) is -inf for large negative x: use F.logsigmoid",
                   hint="h = (pc - rc) - (pr - rr); L = -(1 - ls) F.logsigmoid(beta h) - ls F.logsigmoid(-beta h), "
                        "one per pair"),
    GradedFunction("ipo_loss", _reference_ipo, _ipo_cases, points=3, grad_wrt=(0, 1), wrong=IPO_WRONG,
                   library=("minimopd.losses.dpo_loss",),
                   hint="h = (pc - rc) - (pr - rr); L = (h - 1 / (2 beta))^2, one per pair"),
]
