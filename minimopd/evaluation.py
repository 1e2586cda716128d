"""Evaluation: per-domain accuracy by difficulty, format rate and response length.

Every stage and recipe reports through `evaluate`, so numbers are comparable across the course:
held-out test items (never seen in pretraining or training), greedy decoding, the task's own
`score`. For the preference domain the score is the hidden gold reward in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .memory import oom_hint
from .profiles import Profile, get_profile
from .progress import bar as progress_bar
from .rollout import generate
from .tasks import DIFFICULTIES, VERIFIABLE_DOMAINS, extract_answer, format_ok, get_task
from .threads import model_threads

_TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<|user|>", "<|assistant|>")


def well_formed(text: str, finished: bool, *, reasoning: bool) -> bool:
    """Did the model answer in the expected shape? Reasoning mode: `<think>..</think><answer>..
    </answer>`; plain mode: a non-empty answer with no stray tags. Both must end the turn."""
    if not finished:
        return False
    if reasoning:
        return format_ok(text)
    return bool(text.strip()) and not any(tag in text for tag in _TAGS)


@dataclass
class EvalResult:
    rows: list[dict]                  # one per (domain, difficulty)
    samples: list[dict] = field(default_factory=list)

    def _select(self, domain=None, difficulty=None):
        return [r for r in self.rows if (domain is None or r["domain"] == domain)
                and (difficulty is None or r["difficulty"] == difficulty)]

    def _mean(self, key, domain=None, difficulty=None) -> float:
        rows = self._select(domain, difficulty)
        n = sum(r["n"] for r in rows)
        return sum(r[key] * r["n"] for r in rows) / n if n else float("nan")

    def accuracy(self, domain=None, difficulty=None) -> float:
        """Mean score over the selected rows (weighted by item count)."""
        return self._mean("accuracy", domain, difficulty)

    def summary(self) -> dict[str, float]:
        """Flat metrics: `acc`, `acc/<difficulty>`, `acc/<domain>/<difficulty>`, `format_rate`, ..."""
        out = {"acc": self.accuracy(), "format_rate": self._mean("format_rate"),
               "mean_length": self._mean("mean_length")}
        for diff in sorted({r["difficulty"] for r in self.rows}, key=_level_order):
            out[f"acc/{diff}"] = self.accuracy(difficulty=diff)
        for r in self.rows:
            out[f"acc/{r['domain']}/{r['difficulty']}"] = r["accuracy"]
        return out

    def table(self) -> str:
        """A text table: one row per domain, one column per difficulty, plus format rate."""
        diffs = sorted({r["difficulty"] for r in self.rows}, key=_level_order)
        domains = list(dict.fromkeys(r["domain"] for r in self.rows))
        head = f"{'domain':<10}" + "".join(f"{d:>9}" for d in diffs) + f"{'format':>9}{'len':>7}"
        lines = [head, "-" * len(head)]
        for dom in domains:
            cells = "".join(f"{self.accuracy(dom, d):>9.3f}" for d in diffs)
            lines.append(f"{dom:<10}{cells}{self._mean('format_rate', dom):>9.3f}"
                         f"{self._mean('mean_length', dom):>7.1f}")
        cells = "".join(f"{self.accuracy(None, d):>9.3f}" for d in diffs)
        lines.append(f"{'all':<10}{cells}{self._mean('format_rate'):>9.3f}{self._mean('mean_length'):>7.1f}")
        return "\n".join(lines)


def _level_order(level: str) -> int:
    return DIFFICULTIES.index(level) if level in DIFFICULTIES else len(DIFFICULTIES)


@torch.no_grad()
@model_threads
def evaluate(model, tokenizer, tasks=None, *, profile: Profile | str | None = None,
             n_per_level: int | None = None, difficulties=DIFFICULTIES, reasoning: bool = False,
             max_new_tokens: int | None = None, batch_size: int | None = None, seed: int = 0,
             keep_samples: int = 3, chat: bool = True) -> EvalResult:
    """Greedy-decode held-out test items of each task and level; score them.

    `tasks`: names (default: the four verifiable domains). Sizes default to the profile's.
    `chat=False` feeds raw prompts (R1-Zero's template for a base model).
    """
    prof = get_profile(profile)
    n = n_per_level or prof.eval_per_level
    max_new_tokens = max_new_tokens or (prof.max_new_tokens * (4 if reasoning else 1))
    batch_size = batch_size or prof.eval_batch_size
    rows, samples = [], []
    cells = [(name, diff) for name in (tasks or VERIFIABLE_DOMAINS) for diff in difficulties]
    for name, diff in progress_bar(cells, desc="evaluating"):   # a bar only inside a recipe run
        task = get_task(name)
        examples = task.sample(n, split="test", seed=seed, difficulty=diff)
        scores, formats, lengths = [], [], []
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            with oom_hint("evaluate", f"batch_size={batch_size} (the profile's eval_batch_size) and "
                                      f"max_new_tokens={max_new_tokens}"):
                ro = generate(model, tokenizer, [e.prompt for e in chunk], temperature=0.0,
                              max_new_tokens=max_new_tokens, chat=chat)
            lengths += ro.completion_lengths.tolist()
            for ex, text, fin in zip(chunk, ro.texts, ro.finished.tolist()):
                scores.append(task.score(ex, text))
                formats.append(float(well_formed(text, fin, reasoning=reasoning)))
                if len(samples) < keep_samples * 12 and sum(
                        s["domain"] == name and s["difficulty"] == diff for s in samples) < keep_samples:
                    samples.append({"domain": name, "difficulty": diff, "prompt": ex.prompt,
                                    "answer": ex.answer, "completion": text,
                                    "parsed": extract_answer(text), "score": scores[-1]})
        rows.append({"domain": name, "difficulty": diff, "n": len(examples),
                     "accuracy": sum(scores) / len(scores),
                     "format_rate": sum(formats) / len(formats),
                     "mean_length": sum(lengths) / len(lengths)})
    return EvalResult(rows=rows, samples=samples)
