"""Lab 06 (DeepSeek-R1): the rule rewards and the rejection-sampling filter.

References: `minimopd.rewards.format_reward`, `accuracy_reward`, `r1_reward(format_weight)` and
`rejection_filter` (with `require_format=False`). Completions are generated from a small
grammar of well-formed traces and their mutations (missing, duplicated, nested or reordered
tags, text outside the blocks, whitespace, empty blocks, an `<|end|>` tail), so the student's
rules are compared with the library's on many strings, nasty ones included. The classic bugs of
`r1_reward` and `rejection_filter` are their wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Optional

from .compare import _type_name
from .engine import LABS, Case, GradedFunction, _rng

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
END = "<|end|>"
_WS = ("", "", " ", "\n", "  ", " \n", "\t")
_CONTENT = ("", "3+4 -> 7", "a b c", "7", "sort 3 1 2 -> 1 2 3", "x < y > z", "  spaced  ",
            "think", "answer: 12", "line one\nline two", "-> 42", "</thin>", "<thinking>")


@lru_cache(maxsize=1)
def _examples():
    """A few fixed examples of every verifiable domain (prompt, answer, domain)."""
    from ..tasks import VERIFIABLE_DOMAINS, get_task
    return tuple(ex for d in VERIFIABLE_DOMAINS for ex in get_task(d).sample(6, split="train", seed=606))


def _short(text: str, n: int = 70) -> str:
    s = repr(text)
    return s if len(s) <= n else s[: n - 4] + "...'"


def _well_formed(r: random.Random, think: Optional[str] = None, answer: Optional[str] = None) -> str:
    think = r.choice(_CONTENT) if think is None else think
    answer = r.choice(_CONTENT) if answer is None else answer
    return f"{r.choice(_WS)}<think>{think}</think>{r.choice(_WS)}<answer>{answer}</answer>{r.choice(_WS)}"


def _blocks(r: random.Random) -> list[str]:
    """The pieces of a well-formed trace, for mutations."""
    return ["<think>", r.choice(_CONTENT), "</think>", r.choice(_WS), "<answer>", r.choice(_CONTENT),
            "</answer>"]


# --------------------------------------------------------------------------- format_reward

def _format_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    ex = _examples()
    add = lambda family, text, hint="": cases.append(  # noqa: E731
        Case(family, (r.choice(ex), text), hint=hint, desc=f"completion={_short(text)}"))
    cases: list[Case] = []
    for _ in range(4):
        add("well-formed traces", _well_formed(r),
            "well-formed: the two blocks, in order, with only whitespace (any amount) around and between them")
    add("empty blocks", "<think></think><answer></answer>", "contents may be empty")
    add("empty blocks", _well_formed(r, think="", answer=r.choice(_CONTENT)), "contents may be empty")
    add("empty blocks", _well_formed(r, think=r.choice(_CONTENT), answer=""), "contents may be empty")
    ws_hint = "only whitespace may surround or separate the two blocks, and it may (\\s*, or strip)"
    add("whitespace around and between", f"\n  <think>{r.choice(_CONTENT)}</think> \n <answer>7</answer>\n\n", ws_hint)
    add("whitespace around and between", f"\t<think>a</think>\t<answer> 7 </answer> ", ws_hint)
    add("whitespace around and between", f"<think>\n{r.choice(_CONTENT)}\n</think>\n<answer>\n7\n</answer>", ws_hint)
    close_hint = "every block needs its closing tag: <think>...</think><answer>...</answer>"
    for drop in range(4):
        pieces = _blocks(r)
        pieces.remove(TAGS[drop])
        add("missing or unclosed tag", "".join(pieces), close_hint)
    add("missing or unclosed tag", f"<think>{r.choice(_CONTENT)}</think><answer>7", close_hint)
    add("missing or unclosed tag", f"<think>{r.choice(_CONTENT)}", close_hint)
    dup_hint = "exactly one of each tag: a second <think>, </think>, <answer> or </answer> anywhere is malformed"
    add("duplicate or nested tags", "<think><think>a</think></think><answer>7</answer>", dup_hint)
    add("duplicate or nested tags", "<think>a</think><answer>7</answer><answer>8</answer>", dup_hint)
    add("duplicate or nested tags", "<think>a<answer>7</answer></think><answer>7</answer>", dup_hint)
    add("duplicate or nested tags", "<think>a</think><think>b</think><answer>7</answer>", dup_hint)
    add("duplicate or nested tags", f"<think>{r.choice(_CONTENT)}</think><answer>7</think></answer>", dup_hint)
    add("duplicate or nested tags", "<think>a</think><answer><think>b</think>7</answer>", dup_hint)
    out_hint = "nothing but whitespace may appear before, between or after the two blocks"
    text = r.choice(["The answer:", "ok", "x", "</>"])
    add("text outside the blocks", text + _well_formed(r), out_hint)
    add("text outside the blocks", _well_formed(r) + r.choice([" done", ".", "7", "</think"]), out_hint)
    add("text outside the blocks", f"<think>a</think> so <answer>7</answer>", out_hint)
    add("text outside the blocks", f"<think>a</think>\n.\n<answer>7</answer>", out_hint)
    order_hint = "the think block comes first, then the answer block"
    add("wrong order", f"<answer>7</answer><think>{r.choice(_CONTENT)}</think>", order_hint)
    add("wrong order", "</think>a<think><answer>7</answer>", order_hint)
    add("wrong order", "<think>a<answer></think>7</answer>", order_hint)
    plain_hint = "a bare answer (or nothing) is not the reasoning format"
    add("no reasoning format", r.choice(["7", "1 2 3", "lamp"]), plain_hint)
    add("no reasoning format", "", plain_hint)
    add("no reasoning format", "<answer>7</answer>", plain_hint)
    add("no reasoning format", "<think>a</think>", plain_hint)
    tag_hint = "tags are exact strings: <Think>, < think> or <think > do not count"
    add("look-alike tags", "<Think>a</Think><Answer>7</Answer>", tag_hint)
    add("look-alike tags", "<think >a</think><answer>7</answer>", tag_hint)
    add("look-alike tags", "< think>a</think><answer>7</answer>", tag_hint)
    end_hint = "cut the completion at the first <|end|>: what follows the end of the turn is ignored"
    add("<|end|> tail", _well_formed(r) + END, end_hint)
    add("<|end|> tail", _well_formed(r) + END + r.choice(["<think>", "junk", "</answer>", END, "<answer>x</answer>"]),
        end_hint)
    add("<|end|> tail", f"<think>{r.choice(_CONTENT)}</think>{END}<answer>7</answer>", end_hint)
    add("<|end|> tail", END + _well_formed(r), end_hint)
    long = " ".join(r.choice(_CONTENT) for _ in range(12))   # a full reasoning budget (~128 tokens)
    add("long traces (training size)", f"<think>{long}</think><answer>{r.choice(_CONTENT)}</answer>")
    add("long traces (training size)", f"<think>{long}</think> {long} <answer>7</answer>", out_hint)
    for _ in range(3):   # truncated generations: the reference decides
        text = _well_formed(r) + r.choice(["", END])
        add("truncated generations", text[: r.randint(0, len(text))])
    return cases


def _diagnose_format(case: Case, expected, got) -> Optional[str]:
    return "the format reward is 1.0 or 0.0, nothing in between" if got not in (0, 1) else None


# --------------------------------------------------------------------------- accuracy_reward

def _accuracy_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    from ..tasks import get_task
    cases: list[Case] = []

    def add(family, ex, text, hint=""):
        cases.append(Case(family, (ex, text), hint=hint,
                          desc=f"{ex.domain} {ex.prompt!r}, answer {ex.answer!r}, completion={_short(text, 60)}"))

    pool = list(_examples())
    r.shuffle(pool)
    for ex in pool[:4]:
        add("correct reasoning trace", ex, get_task(ex.domain).solution(ex, reasoning=True))
    for ex in pool[4:7]:
        add("bare answers", ex, ex.answer)
        add("bare answers", ex, ex.answer + "9")
    for ex in pool[7:10]:
        wrong = ex.answer[::-1] + "0" if len(ex.answer) > 1 else ex.answer + "1"
        add("wrong answers", ex, f"<think>-> {ex.answer}</think><answer>{wrong}</answer>",
            "the answer block counts, not the think block")
    ex = pool[10]
    add("whitespace in the answer", ex, f"<think>x</think><answer>  {ex.answer} \n</answer>",
        "answers are compared after normalising whitespace (the task's score does it)")
    ex = pool[11]
    add("text after <|end|> is ignored", ex, f"<answer>nope</answer>{END}<answer>{ex.answer}</answer>",
        "use the task's verifier: get_task(example.domain).score(example, completion)")
    ex = pool[12]
    add("several answer blocks (the last counts)", ex, f"<answer>0</answer><answer>{ex.answer}</answer>",
        "use the task's verifier: get_task(example.domain).score(example, completion)")
    ex = pool[13]
    add("unclosed answer", ex, f"<think>a</think><answer>{ex.answer}",
        "use the task's verifier: get_task(example.domain).score(example, completion)")
    return cases


# --------------------------------------------------------------------------- r1_reward

def _reference_r1_reward(example, completion, format_weight=0.5):
    from ..rewards import r1_reward
    return r1_reward(format_weight)(example, completion)


def _r1_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    from ..tasks import get_task
    cases: list[Case] = []
    pool = list(_examples())
    r.shuffle(pool)

    def add(family, ex, text, kwargs=None, hint=""):
        kwargs = {} if kwargs is None else kwargs
        w = f", format_weight={kwargs['format_weight']}" if kwargs else ""
        cases.append(Case(family, (ex, text), kwargs, hint=hint,
                          desc=f"answer {ex.answer!r}, completion={_short(text, 56)}{w}"))

    def trace(ex, answer=None):
        return get_task(ex.domain).solution(ex, reasoning=True) if answer is None else \
            f"<think>{get_task(ex.domain).worked_steps(ex)}</think><answer>{answer}</answer>"

    for ex in pool[:3]:
        add("correct and well-formed", ex, trace(ex))
    for ex in pool[3:6]:
        add("well-formed but wrong", ex, trace(ex, answer=ex.answer + "1"),
            hint="a well-formed wrong answer earns format_weight (the format part only)")
    fmt_hint = "accuracy only counts when the format is right: a correct answer outside the exact format earns 0"
    add("correct answer, broken format", pool[6], pool[6].answer, hint=fmt_hint)
    add("correct answer, broken format", pool[7], f"<answer>{pool[7].answer}</answer>", hint=fmt_hint)
    add("correct answer, broken format", pool[8], trace(pool[8]) + " extra", hint=fmt_hint)
    add("correct answer, broken format", pool[9], "<think>a</think><think>b</think>"
        f"<answer>{pool[9].answer}</answer>", hint=fmt_hint)
    w_hint = "use the format_weight argument: reward = format * accuracy + format_weight * format"
    for ex, w in zip(pool[10:14], (0.0, 0.25, 1.0, 2.0)):
        add("custom format_weight", ex, trace(ex, answer=r.choice([None, ex.answer + "2"])),
            {"format_weight": w}, hint=w_hint)
    add("custom format_weight", pool[14], pool[14].answer, {"format_weight": 1.0}, hint=fmt_hint)
    add("<|end|> tail", pool[15], trace(pool[15]) + END + "junk")
    return cases


def _r1_wrong(combine):
    """A wrong version of r1_reward: `combine(accuracy, format, format_weight)`."""
    def wrong(example, completion, format_weight=0.5):
        from ..rewards import accuracy_reward, format_reward
        return float(combine(accuracy_reward(example, completion), format_reward(example, completion),
                             format_weight))
    return wrong


R1_WRONG = (
    (_r1_wrong(lambda acc, fmt, w: acc + w * fmt),
     "accuracy only counts when the format is right: reward = format * accuracy + format_weight * format"),
    (_r1_wrong(lambda acc, fmt, w: acc * fmt + 0.5 * fmt), "use the format_weight argument instead of a "
                                                          "hard-coded 0.5"),
    (_r1_wrong(lambda acc, fmt, w: acc * fmt + fmt), "the format part is worth format_weight, not 1"),
    (_r1_wrong(lambda acc, fmt, w: acc * fmt), "add the format part: format_weight * format"),
    (_r1_wrong(lambda acc, fmt, w: (acc * fmt + w * fmt) / (1 + w)),
     "no normalisation: reward = format * accuracy + format_weight * format"),
)


# --------------------------------------------------------------------------- rejection_filter

def _reference_rejection_filter(examples, completions, scores, *, per_prompt=1):
    from ..rewards import rejection_filter
    return rejection_filter(examples, completions, scores, per_prompt=per_prompt)


def _rejection_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    pool = list(_examples())
    r.shuffle(pool)
    cases: list[Case] = []

    def rollouts(n_prompts, G, *, p_correct=0.5, n_texts=3, partial=False, shuffle=False, offset=0):
        exs = pool[offset:offset + n_prompts]
        rows, texts, scores = [], [], []
        for ex in exs:
            cand = [f"<think>{r.choice(_CONTENT)}</think><answer>{ex.answer}</answer>" for _ in range(n_texts)]
            for _ in range(G):
                rows.append(ex)
                texts.append(r.choice(cand))
                scores.append(r.choice([0.5, 0.0, 1.0]) if partial and r.random() < 0.4
                              else float(r.random() < p_correct))
        order = list(range(len(rows)))
        if shuffle:
            r.shuffle(order)
        return [rows[i] for i in order], [texts[i] for i in order], [scores[i] for i in order]

    def add(family, data, per_prompt=None, hint=""):
        exs, texts, scores = data
        kwargs = {} if per_prompt is None else {"per_prompt": per_prompt}
        desc = (f"{len({e.prompt for e in exs})} prompts, {len(texts)} samples, "
                f"scores {[float(s) for s in scores][:12]}{'...' if len(scores) > 12 else ''}"
                + (f", per_prompt={per_prompt}" if per_prompt is not None else ""))
        cases.append(Case(family, (list(exs), list(texts), list(scores)), kwargs, hint=hint, desc=desc))

    add("G samples per prompt, per_prompt=1 (default)", rollouts(3, 4))
    add("G samples per prompt, per_prompt=1 (default)", rollouts(2, 6, offset=3))
    add("per_prompt=2", rollouts(3, 6, p_correct=0.7), 2,
        hint="keep at most per_prompt distinct correct completions per prompt")
    add("per_prompt=3", rollouts(2, 8, p_correct=0.8, n_texts=5, offset=5), 3,
        hint="keep at most per_prompt distinct correct completions per prompt")
    ex = pool[8]
    text = f"<think>a</think><answer>{ex.answer}</answer>"
    other = f"<think>b</think><answer>{ex.answer}</answer>"
    add("duplicate completions", ([ex] * 4, [text, text, text, other], [1.0, 1.0, 1.0, 1.0]), 2,
        hint="keep DISTINCT completions: a repeat of an already kept text is skipped (and does not count)")
    add("trailing whitespace", ([ex] * 3, [text + "\n", text + " ", other], [1.0, 1.0, 1.0]), 2,
        hint="strip trailing whitespace (text.rstrip()) before comparing and keeping a completion")
    add("partial credit is not verified", rollouts(3, 4, partial=True, offset=9), 2,
        hint="keep only score == 1.0 (verified correct); 0.5 is not correct")
    add("interleaved prompts (first-seen order)", rollouts(3, 4, p_correct=0.6, shuffle=True, offset=12), 2,
        hint="group the kept pairs by prompt, prompts in the order of their first kept completion, "
             "each prompt's completions in the order seen")
    a, b = pool[15], pool[16]
    same = "<think>x</think><answer>1</answer>"
    add("the same text for different prompts", ([a, b, a, b], [same, same, same, same], [1.0, 1.0, 1.0, 0.0]),
        hint="distinct per prompt: the same text may be kept once for each prompt")
    add("a training round (16 prompts x G=8, interleaved)", rollouts(16, 8, p_correct=0.4, n_texts=6,
                                                                     shuffle=True, offset=2), 2)
    add("nothing correct", rollouts(2, 4, p_correct=0.0, offset=17), hint="no correct sample: return []")
    add("empty input", ([], [], []), hint="no samples: return []")
    return cases


def _rejection_wrong(*, strip=True, ok=lambda s: s == 1.0, dedup="prompt", cap=True, grouped=True):
    """A wrong version of rejection_filter with the given switches (the defaults are right)."""
    def wrong(examples, completions, scores, *, per_prompt=1):
        kept: dict[str, list[str]] = {}
        flat, seen = [], set()
        for ex, text, score in zip(examples, completions, scores):
            if not ok(score):
                continue
            text = text.rstrip() if strip else text
            bucket = kept.setdefault(ex.prompt, [])
            dup = (text in bucket) if dedup == "prompt" else (text in seen) if dedup == "global" else False
            if (not cap or len(bucket) < per_prompt) and not dup:
                bucket.append(text)
                seen.add(text)
                flat.append((ex.prompt, text))
        return [(p, t) for p, ts in kept.items() for t in ts] if grouped else flat
    return wrong


REJECTION_WRONG = (
    (_rejection_wrong(ok=lambda s: s > 0), "keep only score == 1.0: partial credit (0.5) is not verified-correct"),
    (_rejection_wrong(ok=lambda s: True), "keep only verified-correct samples (score == 1.0)"),
    (_rejection_wrong(strip=False), "strip trailing whitespace (text.rstrip()) before comparing and keeping a "
                                    "completion"),
    (_rejection_wrong(dedup="none"), "keep DISTINCT completions: skip a text already kept for that prompt"),
    (_rejection_wrong(dedup="global"), "distinct PER PROMPT: the same text may be kept once for each prompt"),
    (_rejection_wrong(cap=False), "keep at most per_prompt completions per prompt"),
    (_rejection_wrong(grouped=False), "group the pairs by prompt (prompts in the order of their first kept "
                                      "completion), not in sample order"),
    (lambda *args, **kw: sorted(_reference_rejection_filter(*args, **kw)), "keep first-seen order: do not sort"),
)


def _diagnose_rejection(case: Case, expected, got) -> Optional[str]:
    if not isinstance(got, (list, tuple)):
        return f"return a list of (prompt, completion) pairs (got {_type_name(got)})"
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in got):
        return "each kept item is a pair (example.prompt, completion)"
    return None


LABS["lab06"] = [
    GradedFunction(
        "format_reward", "minimopd.rewards.format_reward", _format_cases, points=4,
        diagnose=_diagnose_format,
        hint="1.0 iff the text before the first <|end|> is <think>...</think><answer>...</answer> with only "
             "whitespace around, exactly one of each tag"),
    GradedFunction(
        "accuracy_reward", "minimopd.rewards.accuracy_reward", _accuracy_cases, points=1,
        hint="call the task's own verifier: float(get_task(example.domain).score(example, completion))"),
    GradedFunction(
        "r1_reward", _reference_r1_reward, _r1_cases, points=2, wrong=R1_WRONG,
        library=("minimopd.rewards.r1_reward",),
        hint="format * accuracy + format_weight * format"),
    GradedFunction(
        "rejection_filter", _reference_rejection_filter, _rejection_cases, points=3,
        library=("minimopd.rewards.rejection_filter",), wrong=REJECTION_WRONG, diagnose=_diagnose_rejection,
        hint="score == 1.0 only; distinct (rstripped) texts; at most per_prompt per prompt; grouped by prompt "
             "in first-kept order"),
]
