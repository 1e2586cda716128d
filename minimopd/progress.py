"""What a long run shows while it works: recipe k of n, stage k of n, a bar per stage named after
it, a one-line summary when a stage ends, a bar while evaluating.

`minimopd lineage` opens a `recipe(...)` context per recipe; inside it, `cache.cached_stage`
reports each stage (`stage(...)`), the training loops name their bars with `label(...)` and
`evaluate` shows a bar (`bar(...)`). Outside such a context (a notebook calling the library,
the tests) nothing extra is printed and the loops keep their plain bars.

A `Lineage` (the plan of a `minimopd lineage` run: which recipes, which stages) estimates the
time left: the stages not reached yet, at the seconds each took on the reference machine
(`REFERENCE_SECONDS`), scaled by how fast this machine trained the stages so far.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .tasks import VERIFIABLE_DOMAINS


# Seconds each stage took on the reference machine (a 2-core x86 laptop, torch 2.13 CPU, one job
# at a time, the v3 world), training plus its share of evaluation and loading ("overhead" per
# stage). `cpu`: the seed-0 lineage runs of RESULTS.md, from their cache records' wall_time;
# `smoke`: `minimopd lineage --profile smoke` from an empty cache (below). Stage names as
# in `recipes.RECIPE_STAGES`; a stage not listed is "not measured yet" and left out of the sum.
REFERENCE_SECONDS: dict[str, dict[str, float]] = {
    # smoke: seconds from the cache records of one run (2026-11-28, one thread beside another
    # one-thread job: 1m42s in all); "overhead" spreads its evaluation and loading over the stages
    "smoke": {"overhead": 0.43, "base": 8.9, "sft": 2.1, "sft:reasoning": 3.2, "rlvr": 0.6, "r1_zero": 0.6,
              "cold_start": 1.6, "r1_reasoning_rl": 0.2, "r1_rejection_sft": 0.4, "r1_final_rl": 0.2,
              "base:small": 0, "r1_distill": 0.1, "cold_start:small": 0, "r1_small_rl": 0.4, "grpo": 0.2,
              "dr_grpo": 0.2, "opd_grpo": 0.3, "opd_sampled": 0.4, "opd_topk": 0.4, "opd_full": 0.4,
              "opd_forward": 0.4, "mopd": 0.4, "mopd_forward": 0.4, "mixed_rl": 0.7, "v32_distill": 0.3,
              "v32_mixed_rl": 0.6, "mimo_mopd": 0.4, "v4_mopd": 0.5, "nemotron_warmup": 0.2, "nemotron_mopd1": 0.5,
              "nemotron_mopd2": 0.4, "mai_distill": 0.3, "mai_final_rl": 0.5,
              # a domain's specialist SFT, whichever model it forks (the student, the RLVR model, round 2's)
              **{f"specialist_{d}{v}": t for d, t in (("add", 1.4), ("sort", 2.2), ("reverse", 1.8), ("count", 1.6))
                 for v in ("", ":from_rlvr", ":round2")},
              **{f"specialist_{d}_rl{v}": t for d, t in (("add", 0.7), ("sort", 0.9), ("reverse", 0.8), ("count", 0.6))
                 for v in ("", ":climb")},
              **{f"glm5_rl_{d}": t for d, t in (("add", 0.5), ("sort", 0.6), ("reverse", 0.5), ("count", 0.4))},
              "specialist_count:at0.1": 0.2, "specialist_count:at0.2": 0.3, "sft_notes": 0.8, "reward_model": 1.8,
              "safety_reward_model": 1.8, "ppo": 1.0, "rs_round1": 0.2, "rs_round2": 0.2, "llama2_ppo": 0.8,
              "llama3_rs1": 0.2, "llama3_dpo1": 0.1, "llama3_rs2": 0.2, "llama3_dpo2": 0.1, "sft_weak": 0.2,
              "dpo_delta": 0.1, "dpo_ranked": 0.1, "tulu3_dpo": 0.1,
              **{f"progressive_{m}_{a}_{i}": 0.1 for m in ("opd_full", "opd_forward") for a in ("final", "progressive")
                 for i in (1, 2, 3)}},
    "cpu": {"overhead": 60, "base": 830, "sft": 1200, "sft:reasoning": 1690, "rlvr": 1630,
            "r1_zero": 3110, "cold_start": 1330, "r1_reasoning_rl": 1390, "r1_rejection_sft": 870,
            "r1_final_rl": 1670, "base:small": 810, "r1_distill": 500, "cold_start:small": 490,
            "r1_small_rl": 460, "grpo": 1420, "dr_grpo": 1360,
            # experiments/opd_probe.py, count, seed 0 (two threads, one job); its OPD and GRPO stages ran
            # 100 steps, so the `opd` recipe's 300 are counted as 3x those
            "specialist_count": 1280, "opd_grpo": 3 * 450, "opd_sampled": 3 * 310, "opd_full": 3 * 335,
            "opd_forward": 3 * 313,
            # the shipped specialists' records (wall_time), two threads
            "specialist_add": 625, "specialist_sort": 1277, "specialist_reverse": 713,
            # `minimopd lineage --recipes mopd` (RESULTS.md "MOPD as a recipe"; mopd ran beside tests:
            # 1,128 s measured, the same work as mopd_forward)
            "mopd": 662, "mopd_forward": 662, "mixed_rl": 504,
            # the instructgpt recipe's stages, seed 0 (2-core AMD EPYC, two threads; RESULTS.md "Reward
            # model and PPO"; the recipe's 150 PPO steps: experiments/overoptimisation.py, 1,015 s)
            "sft_notes": 160, "reward_model": 190, "ppo": 1015,
            # the llama2, llama3 and olmo3_delta recipes, seed 0 (RESULTS.md "Learning from preferences"; llama2_ppo
            # as the instructgpt PPO, its run having been paused;
            # their sampling runs outside the stages, in the recipe: about a minute per round)
            "sft_weak": 50, "dpo_delta": 34, "dpo_ranked": 40, "llama3_rs1": 13, "llama3_dpo1": 38,
            "llama3_rs2": 12, "llama3_dpo2": 37, "rs_round1": 12, "rs_round2": 12, "llama2_ppo": 1015,
            # llama2's safety reward model (`minimopd lineage --recipes llama2`, seed 0, beside short tests)
            "safety_reward_model": 200,
            # tulu3's DPO stage (`minimopd lineage --recipes tulu3`, seed 0, one thread beside another job):
            # 79 s of DPO, its sampling (in the recipe, about 40 s) counted here too
            "tulu3_dpo": 120,
            # the frontier miniatures (RESULTS.md "The frontier miniatures", seed 0): one thread, beside
            # seed 1's run; a specialist's RL stage with its prompt selection
            "specialist_add_rl": 917, "specialist_sort_rl": 1030, "specialist_reverse_rl": 1092,
            "specialist_count_rl": 869, "v4_mopd": 1145, "mimo_mopd": 1162,
            # glm5's staged RL (RESULTS.md "glm5", seed 0, 2026-11-28): one thread beside another job
            "glm5_rl_add": 128, "glm5_rl_sort": 186, "glm5_rl_reverse": 199, "glm5_rl_count": 121,
            # deepseek_v32's stages (RESULTS.md "deepseek_v32 and mai_thinking1", seed 2, 2026-11-28): one
            # thread beside another job; the SFT's 885 s plus about 2 min of the teachers' sampling
            "v32_distill": 1000, "v32_mixed_rl": 763,
            # mai_thinking1's (the same section, seed 2): its RL climbs, then the SFT (730 s) with its sampling
            "specialist_add_rl:climb": 569, "specialist_sort_rl:climb": 845, "specialist_reverse_rl:climb": 764,
            "specialist_count_rl:climb": 536, "mai_distill": 850, "mai_final_rl": 734,
            # nemotron3_ultra's (RESULTS.md "nemotron3_ultra", seed 2, 2026-11-29): one thread beside one or
            # two other one-thread jobs; the specialists forked from the RLVR model, then from round 1's student
            "specialist_add:from_rlvr": 314, "specialist_sort:from_rlvr": 431, "specialist_reverse:from_rlvr": 428,
            "specialist_count:from_rlvr": 346, "nemotron_warmup": 161, "nemotron_mopd1": 956,
            "specialist_add:round2": 296, "specialist_sort:round2": 414, "specialist_reverse:round2": 599,
            "specialist_count:round2": 570, "nemotron_mopd2": 1119,
            # the last untimed stages, from the cached records (`wall_time`) of the probes that ran their
            # work at fewer steps, one thread beside another job (2026-11-28): `opd_topk` cost what
            # `opd_full` did step for step (100 steps: 203-229 s against 207-219 s, seeds 0-2); the
            # `count` specialist stopped at 50 and 100 of its 500 steps; a `progressive` segment is 100
            # of the recipe's 300 OPD steps, timed at 33-34 (65-72 s, experiments/progressive_probe.py)
            "opd_topk": 3 * 335, "specialist_count:at0.1": 36, "specialist_count:at0.2": 73,
            **{f"progressive_{m}_{a}_{i}": 3 * 69 for m in ("opd_full", "opd_forward")
               for a in ("final", "progressive") for i in (1, 2, 3)}},
}


@dataclass
class Lineage:
    """The plan of a lineage run, for its time estimate: the stages of each recipe, in order."""
    profile: str
    recipes: list[tuple[str, tuple[str, ...]]]
    started: float = field(default_factory=time.perf_counter)
    reached: set = field(default_factory=set)   # stage names trained or loaded so far
    shipped: frozenset = frozenset()             # stage names that load from the shipped checkpoints
    trained_s: float = 0.0                       # what the stages trained here took ...
    trained_ref_s: float = 0.0                   # ... and what they took on the reference machine

    def _table(self) -> dict[str, float]:
        return REFERENCE_SECONDS.get(self.profile, {})

    def _pending(self) -> list[str]:
        seen, out = self.reached | self.shipped, []
        for _, stages in self.recipes:
            for s in stages:
                if s not in seen:
                    seen.add(s)
                    out.append(s)
        return out

    def unmeasured(self) -> list[str]:
        """Stages still to come that have no reference time."""
        return [s for s in self._pending() if s not in self._table()]

    def estimate(self) -> Optional[float]:
        """Seconds left: the reference time of every measured stage not reached yet (each
        counted once: recipes share their base), scaled by this machine's speed so far. None:
        no reference times for this profile."""
        table = self._table()
        if not table:
            return None
        speed = self.trained_s / self.trained_ref_s if self.trained_ref_s > 0 else 1.0
        return sum(table[s] + table.get("overhead", 0) for s in self._pending() if s in table) * speed

    def reach(self, stage: str, trained_s: Optional[float]) -> None:
        """Stage `stage` is done: trained here in `trained_s` seconds, or loaded (None)."""
        self.reached.add(stage)
        ref = self._table().get(stage)
        if trained_s is not None and ref:
            self.trained_s += trained_s
            self.trained_ref_s += ref

    def left(self) -> str:
        """'about 1h05m left' (+ the stages without a reference time), or '' without an estimate."""
        seconds, missing = self.estimate(), self.unmeasured()
        if seconds is None:
            return ""
        more = f" + {len(missing)} stage{'s' * (len(missing) > 1)} not timed yet" if missing else ""
        return f"about {_fmt_time(seconds)}{more} left"

    def brief(self) -> str:
        """The estimate in a few words: "about 10h44m (+ 26 stages not timed yet)"."""
        seconds = self.estimate()
        if seconds is None:
            return f"no time estimate for profile {self.profile!r}"
        missing = self.unmeasured()
        return f"about {_fmt_time(seconds)}" + (f" (+ {len(missing)} stages not timed yet)" if missing else "")

    def headline(self) -> str:
        """What the lineage will cost, said once at its start."""
        seconds = self.estimate()
        if seconds is None:
            return (f"time estimate: none for profile {self.profile!r} (reference times exist for "
                    f"{', '.join(p for p, t in REFERENCE_SECONDS.items() if t)})")
        missing = self.unmeasured()
        more = (f" + {', '.join(missing)} (not timed yet)" if missing else "")
        shipped = (f", {len(self.shipped)} more from the shipped checkpoints" if self.shipped else "")
        return (f"time estimate from an empty cache: about {_fmt_time(seconds)}{more} on a 2-core "
                f"laptop, {len(self._pending())} stages to train{shipped} (stages already cached load in seconds)")


@dataclass
class _Run:
    name: str
    k: int
    n: int
    stages: Optional[tuple]              # the names of the stages the recipe builds (None: unknown)
    enabled: bool = True
    started: float = field(default_factory=time.perf_counter)
    lineage: Optional[Lineage] = None
    seen: list = field(default_factory=list)   # stage keys met so far, in order
    current: Optional[str] = None


_run: Optional[_Run] = None


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@contextlib.contextmanager
def recipe(name: str, k: int, n: int, *, stages: Optional[tuple] = None, enabled: bool = True,
           lineage: Optional[Lineage] = None):
    """Within this block, stages report themselves as stage j of len(`stages`) of recipe `k` of
    `n`; `lineage`, when given, is told each stage reached (for its estimate of the time left)."""
    global _run
    previous = _run
    _run = _Run(name, k, n, tuple(stages) if stages else None, enabled, lineage=lineage)
    if enabled:
        print(f"\n-- recipe {k}/{n}: {name}" + (f" ({len(stages)} stages)" if stages else ""), flush=True)
    try:
        yield _run
    finally:
        _run = previous


def active() -> bool:
    return _run is not None and _run.enabled


def label(default: str) -> str:
    """The bar's name: "[2/4 tulu3 · stage 3/3] rlvr" inside a recipe, else `default`."""
    if _run is None:
        return default
    if _run.current is None:
        return f"[{_run.k}/{_run.n} {_run.name}] {default}"
    j = _run.seen.index(_run.current) + 1 if _run.current in _run.seen else len(_run.seen)
    of = f"/{len(_run.stages)}" if _run.stages else ""
    return f"[{_run.k}/{_run.n} {_run.name} · stage {j}{of}] {_run.current.rsplit('-', 1)[0]}"


@contextlib.contextmanager
def stage(key: str):
    """Mark the stage `key` (e.g. "rlvr-64cb...") as the one running; yields a `done(how)`
    callback that prints its one-line summary."""
    if _run is None:
        yield lambda how: None
        return
    first = key not in _run.seen
    if first:
        _run.seen.append(key)
    previous, _run.current = _run.current, key
    t0 = time.perf_counter()

    def done(how: str) -> None:
        if _run is None:
            return
        took = time.perf_counter() - t0
        lineage = _run.lineage
        j = _run.seen.index(key)
        if lineage is not None and _run.stages and j < len(_run.stages):
            lineage.reach(_run.stages[j], took if how == "trained" else None)
        if _run.enabled and (first or how == "trained"):   # a reload says nothing new
            now = time.perf_counter()
            times = [f"recipe {_fmt_time(now - _run.started)}"]
            if lineage is not None:
                times.append(f"lineage {_fmt_time(now - lineage.started)}")
                left = lineage.left()
                if left:
                    times.append(left)
            print(f"   {label(key)}: {how}" + (f" in {_fmt_time(took)}" if how == "trained" else "")
                  + f"  ({', '.join(times)})", flush=True)
    try:
        yield done
    finally:
        _run.current = previous


def bar(iterable: Iterable, *, desc: str, total: Optional[int] = None, progress: Optional[bool] = None):
    """A text tqdm bar named after the running stage; shown if `progress` (default: inside a recipe).

    Plain text, not a notebook widget: a saved notebook shows the bar's last state, never "Error
    displaying widget: model not found". Inside a recipe the bar goes away when done (the stage's
    summary line stays); elsewhere its final state stays as the record."""
    from tqdm.std import tqdm

    show = active() if progress is None else (progress and (_run is None or _run.enabled))
    return tqdm(iterable, desc=label(desc), total=total, disable=not show, leave=_run is None,
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
