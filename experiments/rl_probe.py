"""Probe RL on a cached SFT model: run an online preset for some steps, diagnose before/after.

    python experiments/rl_probe.py --profile cpu --seed 0 --n 300 --select 4800   # the v3 claim's run
    python experiments/rl_probe.py --profile cpu --seed 0 --steps 100 --lr 1e-4 --preset dr_grpo

Steps and learning rate default to the profile's (`rl_steps`, `rl_lr`: 300 and 5e-5 on `cpu`).
`--json` writes the diagnoses and the history for `experiments/summarize.py rl`.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.artifacts import sft_artifact  # noqa: E402
from minimopd.diagnose import PromptSelection, diagnose, select_prompts  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402
from minimopd.signals import VerifierSignal  # noqa: E402
from minimopd.stages.online import OnlineConfig, preset, train_online  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="default: the profile's rl_steps")
    p.add_argument("--lr", type=float, default=None, help="default: the profile's rl_lr")
    p.add_argument("--preset", default="grpo")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--difficulty", default=None)
    p.add_argument("--domains", nargs="*", default=None)
    p.add_argument("--extra", default="{}", help="JSON dict of more OnlineConfig settings")
    p.add_argument("--start", default="sft_reasoning", choices=["sft_reasoning", "cold_start"])
    p.add_argument("--select", type=int, default=0, help="RL prompt selection: candidates to diagnose (0: off)")
    p.add_argument("--high", type=float, default=1.0, help="keep prompts with pass rate < high (1.01 keeps solved ones)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    if args.start == "cold_start":
        from minimopd.recipes_rl import cold_start_artifact
        sft = cold_start_artifact(prof, args.seed, False)
    else:
        sft = sft_artifact(prof, seed=args.seed, reasoning=True, progress=False)
    before = diagnose(sft.model, sft.tokenizer, profile=prof, n_per_level=args.n, reasoning=True, seed=123)
    print("before\n" + before.table(), flush=True)
    kw = dict(steps=args.steps or prof.rl_steps, prompts_per_step=args.prompts, group_size=args.group,
              max_new_tokens=prof.max_new_tokens * 4, lr=args.lr or prof.rl_lr, seed=args.seed, difficulty=args.difficulty)
    if args.domains:
        kw["domains"] = tuple(args.domains)
    kw.update(json.loads(args.extra))
    cfg = preset(args.preset, OnlineConfig(**kw))
    t0 = time.perf_counter()
    pool = None
    if args.select:
        pool, info = select_prompts(sft.model, sft.tokenizer, cfg, PromptSelection(candidates=args.select, high=args.high),
                                    seed=args.seed)
        print(f"selection: {info} ({time.perf_counter() - t0:.0f}s)", flush=True)
    ref = copy.deepcopy(sft.model).eval() if cfg.kl_beta > 0 else None
    res = train_online(copy.deepcopy(sft.model), sft.tokenizer, cfg, signal=VerifierSignal(), prompts=pool,
                       ref_model=ref, device=prof.device, progress=False)
    h = res.history
    k = max(1, len(h) // 10)
    for key in ("reward", "accuracy", "entropy", "length", "kept_fraction", "clip_frac"):
        a = sum(r[key] for r in h[:k]) / k
        b = sum(r[key] for r in h[-k:]) / k
        print(f"{key:14s} first {a:.3f} last {b:.3f}")
    print(f"RL {len(h)} steps in {time.perf_counter() - t0:.0f}s", flush=True)
    after = diagnose(res.model, sft.tokenizer, profile=prof, n_per_level=args.n, reasoning=True, seed=123)
    print("after\n" + after.table(), flush=True)
    for key in ("greedy", "t1"):
        for lv in ("easy", "medium", "hard"):
            d = [after.row(dm, lv)[key] - before.row(dm, lv)[key] for dm in ("add", "sort", "reverse", "count")]
            print(f"delta {key:6s} {lv:6s} " + " ".join(f"{x:+.3f}" for x in d) + f"  mean {sum(d) / 4:+.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"before": before.rows, "after": after.rows, "history": h}, default=str))


if __name__ == "__main__":
    main()
