"""SFT of the student on its specialists' verified traces, from teachers with or without their RL stage.

`deepseek_v32`'s first stage (`recipes_opd.trace_sft`, the teachers' traces on their own domains,
as many prompts in all as R1's rejection round) with the domain-SFT specialists of the `mopd`
recipe (`--teachers sft`, shipped for seed 0) or the SFT + RL specialists of the frontier
recipes (`--teachers sft+rl`, what `deepseek_v32` itself uses). Evaluates the student and the
result (greedy, held-out) and writes both with the stage's compute:

    MINIMOPD_THREADS=1 python experiments/trace_sft_probe.py --seed 0 --teachers sft --n 300 \\
        --json experiments/results/v3/trace_sft_s0.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from minimopd import distill
from minimopd.artifacts import sft_artifact
from minimopd.evaluation import evaluate
from minimopd.profiles import get_profile
from minimopd.recipes_opd import trace_sft
from minimopd.tasks import VERIFIABLE_DOMAINS

INFO_KEYS = ("flops", "sft_flops", "wall_time", "steps", "n_examples", "tokens", "parent")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teachers", choices=("sft", "sft+rl"), default="sft")
    p.add_argument("--n", type=int, default=None, help="held-out items per domain and level")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    profile = get_profile(args.profile)
    student = sft_artifact(profile, seed=args.seed, reasoning=True, progress=False)
    teachers = {d: distill.specialist_artifact(student, profile, d, seed=args.seed, rl=args.teachers == "sft+rl",
                                               progress=False) for d in VERIFIABLE_DOMAINS}
    name = "v32_distill" if args.teachers == "sft+rl" else "trace_sft"
    distilled = trace_sft(student, teachers, profile, seed=args.seed, name=name, progress=False)
    out = {"profile": profile.name, "seed": args.seed, "teachers": args.teachers,
           "teacher_paths": {d: a.path.name for d, a in teachers.items()},
           "info": {k: distilled.info.get(k) for k in INFO_KEYS}, "path": distilled.path.name}
    for label, art in (("student", student), ("trace_sft", distilled)):
        res = evaluate(art.model, art.tokenizer, profile=profile, n_per_level=args.n, seed=args.seed, reasoning=True)
        out[label] = {"mean": res.accuracy(), **{d: res.accuracy(d) for d in VERIFIABLE_DOMAINS}}
        print(f"{label:10s} " + " ".join(f"{k} {v:.3f}" for k, v in out[label].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
