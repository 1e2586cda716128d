"""The task contract: `Example`, the `Task` base class, answer parsing, splits and the registry.

A *task* turns a seed into `Example`s, scores a model's completion for an example, and writes
two kinds of text about an example: the reference assistant turn (`solution`, the SFT target)
and a raw non-chat line (`corpus_text`, for pretraining the base model). The built-in domains
live next to this file (`verifiable.py`, `preference.py`); `minimopd.tasks` re-exports all.

Reasoning format. A reasoning completion is ``<think>STEPS</think><answer>ANSWER</answer>``;
`format_ok` checks that shape and `extract_answer` pulls out the final answer from any
completion, with or without tags.

Train/test split. Whether an item is train or test is a pure function of its prompt text
(`split_of`, an MD5 bucket), so no seed, difficulty or sample size can ever leak a test item
into training. `Task.sample` draws candidates and rejects those of the other split.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

# Bump when a built-in task's distribution (levels, formats, traces) changes: it is part of every
# stage-cache key, so models trained on the old world are never reused for the new one.
WORLD_VERSION = 3
DIFFICULTIES = ("easy", "medium", "hard")
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
VERIFIABLE_DOMAINS = ("add", "sort", "reverse", "count")
PREFERENCE_DOMAIN = "notes"

END_MARKER = "<|end|>"  # end-of-turn marker of the chat template
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
# Task text must never contain these, or a prompt could forge chat turns or reasoning tags.
RESERVED_MARKUP = ("<|", THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# Sampling gives up on finding an item it has not yet returned after this many in-split draws
# (the level's item space is nearly exhausted) and repeats one; it fails after _MAX_DRAWS.
_DUPLICATE_AFTER = 100
_MAX_DRAWS = 5000


@dataclass(frozen=True)
class Example:
    """One task item. `prompt` is the plain user-turn text (no chat markup); `answer` is the
    canonical final answer ("" for the preference domain). `meta` holds structured extras for
    inspection only: it takes no part in equality or hashing, and no method depends on it."""

    prompt: str
    answer: str
    domain: str
    difficulty: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class UnknownTaskError(KeyError):
    """Raised by `get_task` for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would print the message wrapped in quotes
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- answer parsing

def normalize_answer(text: str) -> str:
    """Strip and collapse every run of whitespace to one space, so "3  5\\n12" == "3 5 12"."""
    return " ".join(text.split())


_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
_FORMAT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)


def extract_answer(completion: str) -> str:
    """The final answer in a completion, normalised with `normalize_answer`.

    Text from the first end-of-turn marker ``<|end|>`` on is dropped first: it was generated
    after the turn ended and is never part of the answer. Then, in order of preference: the
    text inside the last ``<answer>...</answer>``; the text after an unclosed last ``<answer>``
    (a generation cut short still gets its answer read); the text after the last ``</think>``;
    the whole completion.
    """
    text = completion.split(END_MARKER, 1)[0]
    spans = _ANSWER_RE.findall(text)
    if spans:
        text = spans[-1]
    elif ANSWER_OPEN in text:
        text = text.rsplit(ANSWER_OPEN, 1)[1]
    elif THINK_CLOSE in text:
        text = text.rsplit(THINK_CLOSE, 1)[1]
    return normalize_answer(text)


def format_ok(completion: str) -> bool:
    """True iff the completion is ``<think>...</think><answer>...</answer>``: exactly one of
    each tag, in that order, with nothing but whitespace around and between the two blocks.
    Contents may be empty. As in `extract_answer`, anything from ``<|end|>`` on is ignored."""
    text = completion.split(END_MARKER, 1)[0]
    if not _FORMAT_RE.fullmatch(text):
        return False
    return all(text.count(tag) == 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))


def check_text(text: str, what: str = "text") -> str:
    """Return `text` if it is printable ASCII (plus newline) without reserved markup, else
    raise ValueError. Guards user-defined tasks against text the tokenizer cannot encode."""
    bad = [c for c in text if not (" " <= c <= "~" or c == "\n")]
    if bad:
        raise ValueError(f"{what} {text!r} has characters outside printable ASCII: {bad[:3]!r}")
    for tag in RESERVED_MARKUP:
        if tag in text:
            raise ValueError(f"{what} {text!r} contains reserved markup {tag!r}")
    return text


# --------------------------------------------------------------------------- splits and levels

def split_of(prompt: str) -> str:
    """"train" or "test" for a prompt: a stable MD5 bucket (never Python's salted hash()), so
    the split of an item is the same in every process, seed and call."""
    bucket = int.from_bytes(hashlib.md5(prompt.encode("utf-8")).digest()[:4], "big") % 1000
    return "test" if bucket < TEST_FRACTION * 1000 else "train"


def _resolve_levels(task_name: str, difficulty, allowed: Sequence[str]) -> tuple[str, ...]:
    if difficulty is None:
        return tuple(allowed)
    levels = (difficulty,) if isinstance(difficulty, str) else tuple(difficulty)
    bad = [lv for lv in levels if lv not in allowed]
    if bad or not levels:
        raise ValueError(
            f"unknown difficulty {bad[0] if bad else difficulty!r} for task {task_name!r}; valid levels: "
            f"{', '.join(allowed)} (pass one of them, a list of them, or None to mix them all)")
    return levels


# --------------------------------------------------------------------------- the Task base

class Task:
    """Base class of all domains. Subclasses set `name` (and `kind`, `levels`) and implement
    `make_example`, plus `worked_steps` if they support reasoning solutions; sampling, splits,
    scoring and the text forms come from here.

    Worked steps conventionally end with ``-> ANSWER``, so that after thinking the model only
    has to copy its last step into ``<answer>``.
    """

    name: str = ""
    kind: str = "verifiable"
    levels: tuple[str, ...] = DIFFICULTIES

    def make_example(self, rng: random.Random, difficulty: str) -> Example:
        """Draw one random item of the given level with `rng` (the only randomness allowed)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_example(rng, difficulty)")

    def sample(self, n: int, *, split: str = "train", seed: int = 0, difficulty=None) -> list[Example]:
        """`n` examples of `split`, deterministic in (task, split, seed, difficulty, n).

        `difficulty` is one level, a list/tuple of levels, or None for all the task's levels;
        several levels are interleaved round-robin (easy, medium, hard, easy, ...), so any
        prefix is balanced and `sample(k)` is a prefix of `sample(n)` for k < n.
        Items are distinct within a call as long as the level has enough unused items in the
        split; once it runs out (e.g. thousands of easy items, or the ~1000 `notes` prompts)
        items repeat rather than fail. Train and test never share a prompt (`split_of`).
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        levels = _resolve_levels(self.name, difficulty, self.levels)
        # A string seed goes through SHA-512 in random.Random: stable across runs and platforms,
        # and independent of the global `random` state that user code may have touched.
        rng = random.Random(f"minimopd/{self.name}/{split}/{seed}/{','.join(levels)}")
        seen: set[str] = set()
        exhausted: set[str] = set()
        return [self._draw(rng, levels[i % len(levels)], split, seen, exhausted) for i in range(n)]

    def _draw(self, rng, level, split, seen, exhausted) -> Example:
        repeat, in_split = None, 0
        for _ in range(_MAX_DRAWS):
            ex = self.make_example(rng, level)
            if split_of(ex.prompt) != split:
                continue  # rejection keeps train and test disjoint whatever the generator does
            in_split += 1
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                return ex
            repeat = repeat or ex
            # Once a level has run dry, stop hunting for fresh items: take any in-split one.
            if level in exhausted or in_split >= _DUPLICATE_AFTER:
                exhausted.add(level)
                return repeat
        if repeat is not None:
            return repeat
        raise RuntimeError(f"task {self.name!r} produced no {split!r} item at level {level!r} in "
                           f"{_MAX_DRAWS} draws; its item space is too small to split")

    def score(self, example: Example, completion: str) -> float:
        """1.0 if the extracted answer equals the example's answer (both normalised), else 0.0."""
        return 1.0 if extract_answer(completion) == normalize_answer(example.answer) else 0.0

    def worked_steps(self, example: Example) -> str:
        """Compact step-by-step working for the example, ending in ``-> ANSWER``."""
        raise NotImplementedError(f"task {self.name!r} has no worked steps, so it has no reasoning "
                                  "solution; give it one (FunctionTask(..., worked=fn))")

    def solution(self, example: Example, *, reasoning: bool = False) -> str:
        """The reference assistant completion: the bare answer, or with `reasoning=True`
        ``<think>STEPS</think><answer>ANSWER</answer>``."""
        if not reasoning:
            return example.answer
        return f"{THINK_OPEN}{self.worked_steps(example)}{THINK_CLOSE}{ANSWER_OPEN}{example.answer}{ANSWER_CLOSE}"

    def corpus_text(self, example: Example, *, worked: bool = False) -> str:
        """A raw (non-chat) line stating the item and its answer, optionally with the working."""
        if worked:
            return f"{example.prompt} {_with_answer(self.worked_steps(example), example.answer)}"
        return f"{example.prompt} {example.answer}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind!r}>"


def _with_answer(steps: str, answer: str) -> str:
    # Corpus lines must state the answer; append it unless the steps already end with it.
    return steps if steps.endswith(answer) else f"{steps} -> {answer}"


class FunctionTask(Task):
    """A verifiable task made of plain functions, for users adding their own domain.

    * ``generate(rng, difficulty) -> (prompt, answer)``: draw one item using only `rng`
      (a `random.Random`), for `difficulty` in `levels`.
    * ``worked(prompt, answer) -> str`` (optional): the worked steps for reasoning solutions;
      end them with ``-> ANSWER`` by convention.
    * ``corpus(prompt, answer, steps) -> str`` (optional): the raw pretraining line; `steps` is
      None unless worked text was asked for. Default: ``"PROMPT ANSWER"`` / ``"PROMPT STEPS"``
      (with ``" -> ANSWER"`` appended if the steps do not already end with the answer).

    Generated text is checked (printable ASCII, no chat or reasoning markup) as it is drawn.
    """

    def __init__(self, name: str, generate: Callable[[random.Random, str], tuple[str, str]], *,
                 worked: Callable[[str, str], str] | None = None,
                 corpus: Callable[[str, str, str | None], str] | None = None,
                 levels: Sequence[str] = DIFFICULTIES):
        if not callable(generate):
            raise TypeError("generate must be a function (rng, difficulty) -> (prompt, answer)")
        levels = tuple(levels)
        if not levels or any(lv not in DIFFICULTIES for lv in levels):
            raise ValueError(f"levels must be a non-empty subset of {DIFFICULTIES}, got {levels!r}")
        self.name, self.levels = name, levels
        self._generate, self._worked, self._corpus = generate, worked, corpus

    def make_example(self, rng, difficulty):
        item = self._generate(rng, difficulty)
        if not (isinstance(item, tuple) and len(item) == 2 and all(isinstance(s, str) for s in item)):
            raise TypeError(f"task {self.name!r}: generate must return (prompt, answer) strings, got {item!r}")
        prompt, answer = (check_text(s, f"task {self.name!r} {what}") for s, what in zip(item, ("prompt", "answer")))
        return Example(prompt, answer, self.name, difficulty)

    def worked_steps(self, example):
        if self._worked is None:
            return super().worked_steps(example)
        return check_text(self._worked(example.prompt, example.answer), f"task {self.name!r} worked steps")

    def corpus_text(self, example, *, worked=False):
        if self._corpus is None:
            return super().corpus_text(example, worked=worked)
        steps = self.worked_steps(example) if worked else None
        return self._corpus(example.prompt, example.answer, steps)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Task] = {}


def register_task(task, *, overwrite: bool = False):
    """Add a task to the registry under `task.name` and return it. Refuses to replace an
    existing name unless `overwrite=True`."""
    missing = [a for a in ("name", "sample", "score") if not hasattr(task, a)]
    if missing or not (callable(task.sample) and callable(task.score)):
        raise TypeError(f"{task!r} is not a task: it needs a name and sample/score methods "
                        f"(missing: {', '.join(missing) or 'callable sample/score'}); subclass "
                        "minimopd.tasks.Task or use FunctionTask")
    name = task.name
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"task name must be a non-empty string of letters, digits, '_' or '-', got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"task {name!r} is already registered; pass overwrite=True to replace it, "
                         "or choose another name")
    _REGISTRY[name] = task
    return task


def unregister_task(name: str):
    """Remove a task from the registry and return it (e.g. to clean up after an experiment)."""
    if name not in _REGISTRY:
        get_task(name)  # raises the helpful UnknownTaskError
    return _REGISTRY.pop(name)


def get_task(name: str):
    """The registered task called `name`; UnknownTaskError (a KeyError) if there is none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}; register "
                               "your own with minimopd.register_task(...)") from None


def list_tasks(kind: str | None = None) -> list[str]:
    """Sorted names of registered tasks, optionally only those of one kind
    ("verifiable" or "preference")."""
    return sorted(n for n, t in _REGISTRY.items() if kind is None or getattr(t, "kind", "verifiable") == kind)
