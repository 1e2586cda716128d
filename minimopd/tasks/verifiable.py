"""The built-in verifiable domains: ``add``, ``sort``, ``reverse``, ``count``.

Each has an ``easy``/``medium``/``hard`` knob, a program that checks the answer (reward 0 or 1),
and worked steps that end in ``-> ANSWER`` (the reasoning traces of the cold-start data).
All are sized for char-level models with a 256-character context.
"""
from __future__ import annotations

import re

from .base import Example, Task


class AddTask(Task):
    """``What is 48+375?`` -> ``423``. Operands: easy 10-99, medium 100-9999, hard 10000-999999
    (two, three-four and five-six digit columns: every column is a step the worked solution can
    get wrong, so errors compound on the long ones)."""

    name = "add"
    _RANGES = {"easy": (10, 99), "medium": (100, 9999), "hard": (10000, 999999)}
    _PROMPT = re.compile(r"What is (\d+)\+(\d+)\?")

    def make_example(self, rng, difficulty):
        lo, hi = self._RANGES[difficulty]
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return Example(f"What is {a}+{b}?", str(a + b), self.name, difficulty, {"a": a, "b": b})

    def _operands(self, example):
        # Parse the prompt rather than trust `meta`, so rebuilt Examples (e.g. from JSON) work.
        return self._PROMPT.fullmatch(example.prompt).groups()

    def worked_steps(self, example):
        a, b = self._operands(example)
        width = max(len(a), len(b))
        a, b = a.zfill(width), b.zfill(width)
        steps, carry = [], 0
        for da, db in zip(reversed(a), reversed(b)):  # right-to-left column sums
            s = int(da) + int(db) + carry
            steps.append(f"{da}+{db}{'+1' if carry else ''}={s}{' c1' if s >= 10 else ''}")
            carry = int(s >= 10)
        return "; ".join(steps) + f" -> {int(a) + int(b)}"

    def corpus_text(self, example, *, worked=False):
        a, b = self._operands(example)
        return f"{a}+{b}: {self.worked_steps(example)}" if worked else f"{a}+{b}={example.answer}"


class SortTask(Task):
    """``Sort: 5 12 3`` -> ``3 5 12``. Distinct numbers 0-99: easy 4, medium 6, hard 8 of them."""

    name = "sort"
    _SIZES = {"easy": 4, "medium": 6, "hard": 8}

    def make_example(self, rng, difficulty):
        xs = rng.sample(range(100), self._SIZES[difficulty])
        return Example("Sort: " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs))),
                       self.name, difficulty, {"items": xs})

    def _items(self, example):
        return [int(x) for x in example.prompt.split(":", 1)[1].split()]

    def worked_steps(self, example):
        # Selection sort spelled out: each step names the smallest number not yet taken.
        ordered = sorted(self._items(example))
        return "; ".join(f"min {x}" for x in ordered) + " -> " + " ".join(map(str, ordered))

    def corpus_text(self, example, *, worked=False):
        head = "sort " + " ".join(map(str, self._items(example)))
        return f"{head}: {self.worked_steps(example)}" if worked else f"{head} -> {example.answer}"


class ReverseTask(Task):
    """``Reverse: abcde`` -> ``edcba``. Lowercase letters: easy 4-5, medium 8-10, hard 15-18
    (v2: 13-15, where the reasoning SFT was already at 0.87 on hard)."""

    name = "reverse"
    _LENGTHS = {"easy": (4, 5), "medium": (8, 10), "hard": (15, 18)}

    def make_example(self, rng, difficulty):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(*self._LENGTHS[difficulty])))
        return Example(f"Reverse: {word}", word[::-1], self.name, difficulty, {"word": word})

    def _word(self, example):
        return example.prompt.split(":", 1)[1].strip()

    def worked_steps(self, example):
        # Spell from the end with 1-based positions, so the model can keep its place.
        word = self._word(example)
        return " ".join(f"{i}:{word[i - 1]}" for i in range(len(word), 0, -1)) + f" -> {word[::-1]}"

    def corpus_text(self, example, *, worked=False):
        head = f"reverse {self._word(example)}"
        return f"{head}: {self.worked_steps(example)}" if worked else f"{head} -> {example.answer}"


class CountTask(Task):
    """``Count a in: abacab`` -> ``3``. Letters a-e (a small alphabet, so counts vary): string
    length easy 4-5, medium 10-14, hard 22-28 (v2: 8-10 and 13-16, which the running-tally trace
    solved at every level); the target letter may be absent (answer 0)."""

    name = "count"
    ALPHABET = "abcde"
    _LENGTHS = {"easy": (4, 5), "medium": (10, 14), "hard": (22, 28)}
    _PROMPT = re.compile(r"Count ([a-z]) in: ([a-z]+)")

    def make_example(self, rng, difficulty):
        target = rng.choice(self.ALPHABET)
        text = "".join(rng.choice(self.ALPHABET) for _ in range(rng.randint(*self._LENGTHS[difficulty])))
        return Example(f"Count {target} in: {text}", str(text.count(target)), self.name, difficulty,
                       {"letter": target, "text": text})

    def worked_steps(self, example):
        # Running tally: every letter followed by the count so far, e.g. "a1 b1 a2 -> 2".
        target, text = self._PROMPT.fullmatch(example.prompt).groups()
        tally, steps = 0, []
        for c in text:
            tally += c == target
            steps.append(f"{c}{tally}")
        return " ".join(steps) + f" -> {tally}"

    def corpus_text(self, example, *, worked=False):
        target, text = self._PROMPT.fullmatch(example.prompt).groups()
        head = f"count {target} in {text}"
        return f"{head}: {self.worked_steps(example)}" if worked else f"{head} -> {example.answer}"
