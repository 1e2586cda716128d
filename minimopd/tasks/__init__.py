"""Task domains: where every prompt, reference answer and reward in minimopd comes from.

* `base`: the contract (`Example`, `Task`, `FunctionTask`), answer parsing, the train/test
  split and the registry (`get_task`, `list_tasks`, `register_task`).
* `verifiable`: ``add``, ``sort``, ``reverse``, ``count`` (a program checks the answer; each
  with an ``easy``/``medium``/``hard`` knob).
* `preference`: ``notes``, whose hidden "human" scorer (`gold_score`) plays the labeller.

Adding your own verifiable domain takes a few lines::

    from minimopd.tasks import FunctionTask, register_task, get_task

    def gen_max(rng, difficulty):                       # rng is a random.Random
        xs = rng.sample(range(100), {"easy": 3, "medium": 5, "hard": 7}[difficulty])
        return "Max of: " + " ".join(map(str, xs)), str(max(xs))

    register_task(FunctionTask("max", gen_max, worked=lambda p, a: "scan -> " + a))
    get_task("max").sample(4, seed=1)                   # -> 4 Examples, scorable by .score
"""
from __future__ import annotations

from .base import (ANSWER_CLOSE, ANSWER_OPEN, DIFFICULTIES, END_MARKER, PREFERENCE_DOMAIN,
                   RESERVED_MARKUP, SPLITS, TEST_FRACTION, THINK_CLOSE, THINK_OPEN,
                   VERIFIABLE_DOMAINS, Example, FunctionTask, Task, UnknownTaskError, check_text,
                   extract_answer, format_ok, get_task, list_tasks, normalize_answer,
                   register_task, split_of, unregister_task)
from .preference import (CRITERIA, NotesTask, gold_breakdown, gold_score, label_pair, preference_pairs,
                         preference_rankings, restraint_score, sample_responses)
from .verifiable import AddTask, CountTask, ReverseTask, SortTask

for _task in (AddTask(), SortTask(), ReverseTask(), CountTask(), NotesTask()):
    register_task(_task)
del _task
