"""Can on-policy distillation repair seed 1's `reverse` blind spot when the slip is not diluted by
three other domains, or with the SFT's learning rate? (RESULTS.md, "`deepseek_v32` and
`mai_thinking1`": every recipe's MOPD left the 8- and 9-letter words at 0.33-0.40.)

    MINIMOPD_THREADS=1 python experiments/blindspot_opd_probe.py [--seed 1] [--steps 100]

From the seed's reasoning-SFT student, with its `reverse` SFT specialist (1.000 on every word
length) as the only teacher: exact full-vocabulary reverse-KL OPD on `reverse` prompts alone (the
recipes' 64 prompts x 2 samples per step, every level), once at the recipes' OPD learning rate
(2e-4 on `cpu`) and once at the SFT's (2e-3). Each is evaluated greedily on the 300 held-out
`reverse` items per level, the medium ones split by word length as in `reverse_blindspot.py`.
Writes experiments/results/v3/blindspot_opd_sS.json.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from minimopd import distill, get_profile
from minimopd.artifacts import online_artifact, sft_artifact
from minimopd.evaluation import evaluate
from minimopd.recipes_opd import opd_config
from minimopd.signals import TeacherSignal
from minimopd.tasks import get_task

from reverse_blindspot import greedy_by_length


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args(argv)
    prof = get_profile("cpu").replace(eval_per_level=300)
    student = sft_artifact(prof, seed=args.seed, reasoning=True, progress=False)
    teacher = distill.specialist_artifact(student, prof, "reverse", seed=args.seed, progress=False)
    task = get_task("reverse")
    medium = task.sample(300, split="test", seed=args.seed, difficulty="medium")
    base = opd_config(prof, "opd_full", seed=args.seed, domains=("reverse",))
    out = {"seed": args.seed, "steps": args.steps, "teacher": teacher.path.name, "runs": {}}
    for name, lr in (("recipes_lr", base.lr), ("sft_lr", prof.sft_lr)):
        cfg = replace(base, steps=args.steps, lr=lr)
        art = online_artifact(student, prof, cfg, name=f"blindspot_opd_{name}",
                              signal=TeacherSignal(teacher.model, mode="full", key=teacher.path.name), progress=False)
        ev = evaluate(art.model, art.tokenizer, tasks=("reverse",), profile=prof, seed=args.seed, reasoning=True)
        hist = art.history
        out["runs"][name] = {"lr": lr, "levels": {r["difficulty"]: round(r["accuracy"], 3) for r in ev.rows},
                             "medium_by_length": greedy_by_length(art, task, medium, prof.max_new_tokens * 4),
                             "teacher_kl": [round(hist[0]["teacher_kl"], 3), round(hist[-1]["teacher_kl"], 3)],
                             "train_s": round(art.info["wall_time"]), "flops": art.info["flops"]}
        print(name, out["runs"][name], flush=True)
    path = Path(__file__).parent / "results" / "v3" / f"blindspot_opd_s{args.seed}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
