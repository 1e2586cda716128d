"""MOPD on v3: which part of Lab 08's MOPD update lowered the student? 40 steps from the seed-0
reasoning SFT student on all four domains, each row routed to its domain's shipped specialist;
greedy evaluation on 100 held-out items per level and domain.

    MINIMOPD_THREADS=1 python experiments/mopd_diag.py [variant ...]   (default: all four)

Variants: the library's sampled-token OPD (clipped loss), MiMo-V2-Flash's truncated-IS update with
alpha 0 and 0.5 (one minibatch, no domain weights), and the exact full-vocabulary reverse KL. Prints
one line per variant and writes experiments/results/v3/mopd_diag_s0.json (RESULTS.md, "MOPD on v3").
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from minimopd import distill, get_profile
from minimopd.artifacts import online_artifact, sft_artifact
from minimopd.evaluation import evaluate
from minimopd.recipes_opd import opd_config
from minimopd.signals import RoutedTeacherSignal, TeacherSignal
from minimopd.tasks import VERIFIABLE_DOMAINS

STEPS = 40
VARIANTS = {                      # name: (preset, config changes, teacher mode)
    "sampled_clipped": ("opd_sampled", {}, "sampled"),
    "mimo_alpha0_mb1": ("mopd_mimo", {}, "sampled"),
    "mimo_alpha05_mb1": ("mopd_mimo", {"outcome_weight": 0.5}, "sampled"),
    "full_reverse": ("opd_full", {}, "full"),
}


def main(names) -> dict:
    profile = get_profile("cpu")
    student = sft_artifact(profile, seed=0, reasoning=True, progress=False)
    teachers = {d: distill.specialist_artifact(student, profile, d, seed=0, progress=False)
                for d in VERIFIABLE_DOMAINS}
    out = {}
    for name in names:
        preset, changes, mode = VARIANTS[name]
        cfg = replace(opd_config(profile, preset, seed=0, domains=VERIFIABLE_DOMAINS), steps=STEPS, **changes)
        signal = RoutedTeacherSignal({d: TeacherSignal(t.model, mode=mode, key=t.path.name) for d, t in teachers.items()})
        start = time.time()
        art = online_artifact(student, profile, cfg, name=f"diag_{name}", signal=signal, progress=False)
        ev = evaluate(art.model, art.tokenizer, tasks=VERIFIABLE_DOMAINS, profile=profile, seed=0, n_per_level=100,
                      reasoning=True)
        h = art.history
        out[name] = {"acc": {d: round(ev.accuracy(d), 3) for d in VERIFIABLE_DOMAINS},
                     "train_acc": [round(sum(r["accuracy"] for r in h[i:i + 10]) / 10, 3) for i in (0, STEPS - 10)],
                     "teacher_kl": [round(h[0]["teacher_kl"], 3), round(sum(r["teacher_kl"] for r in h[-10:]) / 10, 3)],
                     "entropy": [round(h[0]["entropy"], 4), round(h[-1]["entropy"], 4)],
                     "wall": round(time.time() - start)}
        print(name, out[name], flush=True)
    path = Path(__file__).parent / "results" / "v3" / "mopd_diag_s0.json"
    path.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:] or list(VARIANTS))
