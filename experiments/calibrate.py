"""Calibrate the miniature world: train base -> SFT for one profile and seed, then diagnose the
SFT models (greedy / T=1 accuracy, pass@k, learnable fraction, entropy per domain and level).

    python experiments/calibrate.py --profile cpu --seed 0                  # both SFT forms
    python experiments/calibrate.py --profile cpu --forms reasoning --n 300 --json out.json

The calibration targets (issue "a miniature world where post-training visibly works"): for every
verifiable domain after SFT, easy >= 0.6, hard <= easy - 0.15, and pass@8 on hard clearly above
greedy on hard (room for RL to learn).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.artifacts import base_artifact, sft_artifact  # noqa: E402
from minimopd.diagnose import diagnose  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--forms", nargs="+", default=["answer", "reasoning"], choices=["answer", "reasoning"])
    p.add_argument("--n", type=int, default=100, help="items per level")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    t0 = time.perf_counter()
    base = base_artifact(prof, seed=args.seed)
    print(f"base: {base.path} ({time.perf_counter() - t0:.0f}s, heldout loss {base.info.get('heldout_loss')})",
          flush=True)
    out = {}
    for form in args.forms:
        t1 = time.perf_counter()
        art = sft_artifact(prof, seed=args.seed, reasoning=form == "reasoning")
        print(f"sft ({form}): {art.path} ({time.perf_counter() - t1:.0f}s, final loss "
              f"{art.info.get('final_loss')})", flush=True)
        t2 = time.perf_counter()
        res = diagnose(art.model, art.tokenizer, profile=prof, n_per_level=args.n, samples=args.samples,
                       reasoning=form == "reasoning", seed=args.seed)
        print(f"diagnosis of the {form} SFT model ({time.perf_counter() - t2:.0f}s):\n{res.table()}\n", flush=True)
        out[form] = {"meta": res.meta, "rows": res.rows, "sft_info": art.info, "base_info": base.info}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
