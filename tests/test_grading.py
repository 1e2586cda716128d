"""The autograder: the reference passes, every classic bug is caught with a message naming it."""
from __future__ import annotations

import nbformat
import pytest
import torch

from minimopd import grading
from minimopd.grading import (LABS, NOT_IMPLEMENTED, Case, GradedFunction, check, compare_values,
                              grade_notebook)
from minimopd.grading.compare import _clone
from minimopd.grading.engine import same_output
from minimopd.losses import masked_mean as ref_masked_mean
from minimopd.losses import token_logprobs as ref_token_logprobs
from minimopd.tokenizer import chat_prompt

LAB01 = [gf.name for gf in LABS["lab01"]]


def test_lab01_registry():
    assert LAB01 == ["build_sft_example", "collate", "token_logprobs", "masked_mean", "sft_loss"]
    assert sum(gf.points for gf in LABS["lab01"]) == 10


@pytest.mark.parametrize("name", LAB01)
@pytest.mark.parametrize("hidden", [False, True])
def test_reference_passes_against_itself(name, hidden, capsys):
    gf = grading.find(name, "lab01")
    assert check(name, gf.resolve(), lab="lab01", hidden=hidden) == gf.points
    out = capsys.readouterr().out
    assert "FAILED" not in out and f"{gf.points:g}/{gf.points:g} points" in out


# --------------------------------------------------------------------------- classic bugs

def mm_no_mask(values, mask, dim=None):
    return values.mean() if dim is None else values.mean(dim)


def mm_nan_on_empty(values, mask, dim=None):
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum() if dim is None else (values * mask).sum(dim) / mask.sum(dim)


def mm_item(values, mask, dim=None):
    out = ref_masked_mean(values, mask, dim)
    return out.item() if dim is None else out


def mm_in_place(values, mask, dim=None):
    values.mul_(mask)  # modifies the caller's tensor
    return ref_masked_mean(values, mask, dim)


def tl_unshifted(logits, input_ids):
    return torch.log_softmax(logits, -1).gather(-1, input_ids[..., None])[..., 0]


def tl_left_aligned(logits, input_ids):
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return torch.cat([lp, lp.new_zeros(lp.shape[0], 1)], 1)


def tl_softmax_log(logits, input_ids):
    lp = torch.softmax(logits[:, :-1], -1).log().gather(-1, input_ids[:, 1:, None])[..., 0]
    return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], 1)


def tl_float32(logits, input_ids):
    return ref_token_logprobs(logits.float(), input_ids)


def tl_detached(logits, input_ids):
    return ref_token_logprobs(logits.detach(), input_ids)


def tl_half_gradient(logits, input_ids):
    out = ref_token_logprobs(logits, input_ids)
    return out.detach() + 0.5 * (out - out.detach())  # right values, gradient halved


def sl_batch_mean(logprobs, mask):
    return -(logprobs * mask).sum() / mask.sum().clamp(min=1)


def sl_batch_denominator(logprobs, mask):
    return -(logprobs * mask).sum(-1) / mask.sum().clamp(min=1)


def sl_no_mask(logprobs, mask):
    return -logprobs.mean(-1)


def sl_wrong_sign(logprobs, mask):
    return ref_masked_mean(logprobs, mask, dim=1)


def bse_no_eos(tokenizer, prompt, response):
    p = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    return p + r, [0] * len(p) + [1] * len(r)


def bse_mask_everything(tokenizer, prompt, response):
    p = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + r, [1] * (len(p) + len(r))


def bse_no_template(tokenizer, prompt, response):
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + r, [0] * len(p) + [1] * len(r)


def _collate(examples, pad_id, *, left=False, mask_dtype=torch.float32, fill=None):
    T = max(len(ids) for ids, _ in examples)
    out = {"input_ids": torch.full((len(examples), T), pad_id if fill is None else fill),
           "attention_mask": torch.zeros(len(examples), T, dtype=torch.long),
           "loss_mask": torch.zeros(len(examples), T, dtype=mask_dtype)}
    for i, (ids, mask) in enumerate(examples):
        span = slice(T - len(ids), T) if left else slice(0, len(ids))
        out["input_ids"][i, span] = torch.tensor(ids)
        out["attention_mask"][i, span] = 1
        out["loss_mask"][i, span] = torch.tensor(mask, dtype=mask_dtype)
    return out


BUGS = [
    # (function, buggy implementation, the case family it must fail, words of the feedback)
    ("masked_mean", mm_no_mask, "random shapes", "mask is not applied"),
    ("masked_mean", mm_nan_on_empty, "all-zero mask", "got nan — divide by max(mask.sum(), 1)"),
    ("masked_mean", mm_item, "random shapes, dim=None", "expected a torch.Tensor"),
    ("masked_mean", mm_in_place, "random shapes", "modified its input `values` in place"),
    ("token_logprobs", tl_unshifted, "random shapes", "off by one"),
    ("token_logprobs", tl_left_aligned, "random shapes", "one column to the LEFT"),
    ("token_logprobs", tl_softmax_log, "large logits", "torch.log_softmax"),
    ("token_logprobs", tl_float32, "float64 input", "expected dtype torch.float64, got torch.float32"),
    ("token_logprobs", tl_detached, "random shapes", "not differentiable w.r.t. `logits`"),
    ("sft_loss", sl_batch_mean, "random batch", "one loss per example, shape (B,)"),
    ("sft_loss", sl_batch_denominator, "random batch", "row's own mask.sum(-1)"),
    ("sft_loss", sl_no_mask, "random batch", "mask is not applied"),
    ("sft_loss", sl_wrong_sign, "random batch", "NEGATIVE log-likelihood"),
    ("build_sft_example", bse_no_eos, "chat examples", "eos_token_id (<|end|>)"),
    ("build_sft_example", bse_mask_everything, "chat examples", "prompt part"),
    ("build_sft_example", bse_no_template, "chat examples", "chat_prompt(tokenizer, prompt)"),
    ("collate", lambda ex, pad: _collate(ex, pad, left=True), "ragged batch", "pad on the RIGHT"),
    ("collate", lambda ex, pad: _collate(ex, pad, fill=0), "custom pad_id", "pad_id argument"),
    ("collate", lambda ex, pad: _collate(ex, pad, mask_dtype=torch.long), "ragged batch",
     "loss_mask is float"),
]


@pytest.mark.parametrize("name,fn,family,words", BUGS, ids=[f"{b[0]}-{getattr(b[1], '__name__', i)}"
                                                            for i, b in enumerate(BUGS)])
def test_classic_bug_is_caught(name, fn, family, words, capsys):
    with pytest.raises(AssertionError) as info:
        check(name, fn, lab="lab01")
    msg = str(info.value)
    assert msg.startswith(f"{name}: {family}"), msg
    assert words in msg, msg
    out = capsys.readouterr().out
    assert f"{name}: {family}" in out and "FAILED" in out and "0/" in out


# --------------------------------------------------------------------------- the known wrong versions

WRONG = [(lab, gf.name, i) for lab, gfs in LABS.items() for gf in gfs for i in range(len(gf.wrong))]
_NOT_APPLICABLE = object()


def _output(fn, case):
    """`fn`'s output on `case`, or _NOT_APPLICABLE if it raises (a wrong version that does not apply)."""
    try:
        return fn(*_clone(case.args), **case.kwargs)
    except Exception:  # noqa: BLE001
        return _NOT_APPLICABLE


def _like(out, ref):
    """`out` with each float tensor cast to the dtype of the reference's at the same place."""
    if isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor) and out.is_floating_point() \
            and ref.is_floating_point():
        return out.to(ref.dtype)
    if isinstance(out, tuple) and isinstance(ref, tuple) and len(out) == len(ref):
        return tuple(_like(o, r) for o, r in zip(out, ref))
    return out


def _key(x):
    """A fingerprint of a case's arguments, to recognise the case inside the student's function."""
    if isinstance(x, torch.Tensor):
        return str(x.dtype), tuple(x.shape), x.detach().numpy().tobytes()
    if isinstance(x, (list, tuple)):
        return tuple(_key(v) for v in x)
    if isinstance(x, dict):
        return tuple((k, _key(v)) for k, v in sorted(x.items()))
    return x if isinstance(x, (str, int, float, bool, type(None))) else id(x)


@pytest.mark.parametrize("lab,name,i", WRONG, ids=[f"{name}-{i}" for _, name, i in WRONG])
def test_every_wrong_version_is_alive_and_named(lab, name, i, capsys):
    """Every known wrong version of a graded function (a) differs from the reference on at least
    one visible case (else it is dead), and (b) is the one the feedback names on at least one
    such case: one where no earlier wrong version gives the same output (there the engine names
    the earlier one, first match wins). Handed in as the student's function on exactly those
    cases (the reference elsewhere; its floats in the reference's dtype), it fails `check` in
    exactly their families, each verdict ending with its own hint."""
    gf = grading.find(name, lab)
    ref, (wrong, hint) = gf.resolve(), gf.wrong[i]
    differs, named, families = False, set(), set()
    for case in gf.cases(grading.VISIBLE_SEEDS[0]):
        out = _output(wrong, case)
        if out is _NOT_APPLICABLE or same_output(gf, out, _output(ref, case)):
            continue
        differs = True
        if not any((o := _output(make, case)) is not _NOT_APPLICABLE and same_output(gf, o, out)
                   for make, _ in gf.wrong[:i]):
            named.add(_key((case.args, case.kwargs)))
            families.add(case.family)
    assert differs, f"wrong version {i} of {name} ({hint!r}) equals the reference on every case: it is dead"
    assert named, f"wrong version {i} of {name} ({hint!r}) is shadowed: an earlier one always gives the same output"

    def student(*args, **kwargs):
        if _key((args, kwargs)) not in named:
            return ref(*args, **kwargs)
        return _like(wrong(*args, **kwargs), ref(*_clone(args), **kwargs))

    with pytest.raises(AssertionError):
        check(name, student, lab=lab)
    failed = [ln for ln in capsys.readouterr().out.splitlines() if " ... FAILED" in ln]
    assert {ln[len(name) + 2:ln.index(" ... FAILED")] for ln in failed} == families, failed
    assert all(ln.endswith(f" — {hint}") for ln in failed), failed


def test_gradient_mismatch_is_detected():
    with pytest.raises(AssertionError, match=r"gradient w\.r\.t\. `logits`.*values match but the gradients"):
        check("token_logprobs", tl_half_gradient, lab="lab01")


def test_not_implemented_is_reported_kindly(capsys):
    def stub(*args, **kwargs):
        # YOUR CODE HERE
        raise NotImplementedError()

    with pytest.raises(AssertionError) as info:
        check("sft_loss", stub)
    assert str(info.value).startswith(f"sft_loss: {NOT_IMPLEMENTED}")
    assert info.value.__suppress_context__  # no "during handling of NotImplementedError" noise
    assert capsys.readouterr().out.strip() == str(info.value)  # one line, no case-by-case spam


def test_student_exception_names_the_case_and_line():
    def crashing(values, mask, dim=None):
        return values.sum(dim=dim) / mask.sum(dim=dim).clamp(min=1) + undefined_name  # noqa: F821

    with pytest.raises(AssertionError, match=r"raised NameError: .*undefined_name"):
        check("masked_mean", crashing)


def test_hidden_cases_go_beyond_the_visible_ones(capsys):
    """A function that memorised the visible cases passes check() but not the autograder."""
    gf = grading.find("masked_mean", "lab01")
    seen = {(c.args[0].numpy().tobytes(), c.args[2]) for c in gf.cases(grading.VISIBLE_SEEDS[0])}

    def memorised(values, mask, dim=None):
        if (values.detach().numpy().tobytes(), dim) in seen:
            return ref_masked_mean(values, mask, dim)
        return values.sum() * 0.0

    assert check("masked_mean", memorised) == gf.points
    with pytest.raises(AssertionError):
        check("masked_mean", memorised, hidden=True)


def test_cases_are_seeded_and_vary():
    gf = grading.find("token_logprobs", "lab01")
    a, b, c = gf.cases(1), gf.cases(1), gf.cases(2)
    assert all(torch.equal(x.args[0], y.args[0]) for x, y in zip(a, b))
    assert any(x.args[0].shape != y.args[0].shape or not torch.equal(x.args[0], y.args[0])
               for x, y in zip(a, c))


def test_compare_values_tolerance_and_messages():
    x = torch.randn(3, 4)
    assert compare_values(x, x + 1e-7) is None
    assert "expected shape (3, 4), got shape (4, 3)" in compare_values(x, x.T)
    assert "expected dtype torch.float32, got torch.float64" in compare_values(x, x.double())
    assert "got nan" in compare_values(torch.tensor(0.0), torch.tensor(float("nan")))
    assert "1 of 12 values differ" in compare_values(x, x.index_put((torch.tensor(1), torch.tensor(2)),
                                                                    torch.tensor(9.0)))
    assert "first difference at position 2" in compare_values([1, 2, 3], [1, 2, 4])
    assert "missing key(s) ['b']" in compare_values({"a": 1, "b": 2}, {"a": 1})


LAB99 = """
import math
import torch
from minimopd.grading import LABS, Case, GradedFunction


def double_cases(seed):
    g = torch.Generator().manual_seed(seed)
    return [Case("random", (torch.randn(3, generator=g),)), Case("empty", (torch.zeros(0),))]


def pair_reference(x):
    return x.sum(), 3 * x


LABS["lab99"] = [
    GradedFunction("double", lambda x: 2 * x, double_cases, points=3, grad_wrt=(0,)),
    GradedFunction("root", "math.sqrt", lambda seed: [Case("square", (4.0 + seed,))], points=1),
    GradedFunction("pair", pair_reference, double_cases, points=1, grad_wrt=(0,)),
]
"""


@pytest.fixture
def lab99(tmp_path):
    """A lab registered from its own module file (the sandbox imports it in the child too)."""
    import importlib.util
    spec_file = tmp_path / "lab99_spec.py"
    spec_file.write_text(LAB99)
    spec = importlib.util.spec_from_file_location("lab99_spec", spec_file)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    yield LABS["lab99"]
    LABS.pop("lab99", None)


def test_registry_extension_and_notebook_grading(tmp_path, lab99):
    """A new lab is one registry entry in its own module; grade_notebook skips test cells and
    magics, reports crashing cells and keeps going."""
    # tuple outputs: every float tensor in them is value- and gradient-checked
    assert check("pair", lambda x: (x.sum(), x + x + x), lab="lab99") == 1
    with pytest.raises(AssertionError, match="not differentiable"):
        check("pair", lambda x: (x.sum(), (3 * x).detach()), lab="lab99")
    with pytest.raises(AssertionError, match=r"random \[x \(3,\) float32\] \[1\]: 3 of 3 values differ"):
        check("pair", lambda x: (x.sum(), 2 * x), lab="lab99")
    nb = nbformat.v4.new_notebook()
    sol = {"nbgrader": {"grade": False, "solution": True, "locked": False, "grade_id": "g",
                        "schema_version": 3}}
    test = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 3, "grade_id": "t",
                         "schema_version": 3}}
    nb.cells = [
        nbformat.v4.new_code_cell("%matplotlib inline"),
        nbformat.v4.new_code_cell("import math\n!echo hi\nx = 1"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("def double(x):\n    return x + x", metadata=sol),
        nbformat.v4.new_code_cell("raise SystemExit('test cells must not run')", metadata=test),
        nbformat.v4.new_code_cell("def root(v):\n    return math.sqrt(v) + x - 1", metadata=sol),
        nbformat.v4.new_code_cell("raise RuntimeError('after the last graded cell')"),
    ]
    path = tmp_path / "lab99_toy.ipynb"
    nbformat.write(nb, str(path))
    report = grade_notebook(str(path))
    assert report.lab == "lab99" and report.points == {"double": 3, "root": 1, "pair": 0}
    assert "pair: not defined" in report.feedback["pair"] and not report.full_marks
    nb.cells[5].source += "\n\ndef pair(x):\n    return x.sum(), 3 * x"
    nbformat.write(nb, str(path))
    report = grade_notebook(str(path))
    assert report.total == report.max == 5 and report.full_marks
    assert report.cell_errors == ["cell 2: ZeroDivisionError: division by zero (line 1: `1 / 0`)"]
    assert "total" in str(report) and "ZeroDivisionError" in str(report)

    nb.cells[3].source = "def double(x):\n    return (2 * x).detach()"
    nbformat.write(nb, str(path))
    report = grade_notebook(str(path))
    assert report.points == {"double": 0, "root": 1, "pair": 1} and not report.full_marks
    assert "not differentiable" in report.feedback["double"]
    assert grading.main([str(path)]) == 1


def test_lab_is_inferred_from_the_file_name():
    assert grading.lab_of("labs/lab01_sft.ipynb") == "lab01"
    with pytest.raises(ValueError, match="labNN"):
        grading.lab_of("notes.ipynb")
