"""Build one seed's specialist teachers into the cache, some domains per process.

`minimopd lineage` builds a recipe's four specialists one after the other. On a 2-core machine
two processes with one thread each finish them in about half the time:

    MINIMOPD_THREADS=1 python experiments/build_specialists.py --seed 2 --rl add reverse &
    MINIMOPD_THREADS=1 python experiments/build_specialists.py --seed 2 --rl sort count &
    wait
    minimopd lineage --profile cpu --seed 2 --recipes deepseek_v4 ...   # finds them in the cache

Each call is `distill.specialist_artifact(student, profile, domain, seed=..., rl=...)`, the
stage the recipes call, so the cache keys are theirs. The student is the seed's reasoning SFT
model (built first if it is not cached; two processes would then both build it, so build it
once before starting two). Prints each specialist's cache path and wall time.
"""
from __future__ import annotations

import argparse
import time

from minimopd import distill
from minimopd.artifacts import sft_artifact
from minimopd.profiles import get_profile
from minimopd.tasks import VERIFIABLE_DOMAINS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("domains", nargs="+", choices=VERIFIABLE_DOMAINS)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rl", action="store_true", help="add the domain RL stage (the frontier recipes' teachers)")
    args = p.parse_args(argv)
    profile = get_profile(args.profile)
    student = sft_artifact(profile, seed=args.seed, reasoning=True, progress=False)
    for domain in args.domains:
        start = time.perf_counter()
        art = distill.specialist_artifact(student, profile, domain, seed=args.seed, rl=args.rl, progress=False)
        print(f"{domain}: {art.path} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
