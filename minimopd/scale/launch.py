"""A recipe's online stage on trl + torch.distributed: prepare once, train on N processes, evaluate.

    minimopd scale prepare --stage mopd --profile cpu --out runs/scale-mopd   # student, teachers, data, plan
    torchrun --standalone --nproc_per_node N -m minimopd.scale train runs/scale-mopd
    minimopd scale run --stage mopd --profile cpu --processes N --out runs/scale-mopd   # all three

`prepare` runs in one process: it builds (or loads from the cache) the stage's starting
checkpoints exactly as the recipe does, saves them into the run directory with the prompts and
a `plan.json`, and prints the launch command. `train` is what every launched process runs: it
reads the plan, builds the trl trainer (`scale.trainers`), trains, and the main process saves
`final/` (safetensors; `minimopd.load_model` reads it) and `history.json` (trl's log per step).
`run` does both and then scores `final/` with `minimopd.evaluate` beside the starting student.

Stages (the recipes' own settings, `recipes_rl.reasoning_config` / `recipes_opd.opd_config`):
    grpo   RLVR on the reasoning-SFT student (tulu3's RL step, without its DPO stage and prompt
           selection), R1's rule reward; --preset grpo | dr_grpo | dapo
    opd    one teacher (the `count` specialist), trl's DistillationTrainer (--mode full), or the routed
           trainer with one teacher for --mode sampled
    mopd   one specialist per verifiable domain, `RoutedDistillationTrainer`; --mode full | sampled
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

STAGES = ("grpo", "opd", "mopd")
PLAN = "plan.json"


def _stage_setup(stage: str, profile, seed: int, *, preset_name: str, mode: str, progress: bool):
    """(student artifact, {teacher_id: artifact}, OnlineConfig) as the recipe builds them."""
    from .. import distill
    from ..artifacts import sft_artifact
    from ..recipes_opd import OPD_DOMAIN, opd_config
    from ..recipes_rl import reasoning_config
    from ..stages.online_config import preset
    from ..tasks.base import VERIFIABLE_DOMAINS

    student = sft_artifact(profile, seed=seed, reasoning=True, progress=progress)
    if stage == "grpo":
        return student, {}, preset(preset_name, reasoning_config(profile, seed=seed))
    domains = (OPD_DOMAIN,) if stage == "opd" else VERIFIABLE_DOMAINS
    teachers = {d: distill.specialist_artifact(student, profile, d, seed=seed, progress=progress) for d in domains}
    return student, teachers, opd_config(profile, f"opd_{mode}", seed=seed, domains=domains)


def prepare(stage: str, out, *, profile=None, seed: int = 0, preset_name: str = "grpo", mode: str = "full",
            steps: int | None = None, greedy: bool = False, progress: bool = True) -> Path:
    """Write a run directory (`student/`, `teachers/<id>/`, `prompts.jsonl`, `plan.json`); return it."""
    from ..models import save_model
    from ..profiles import get_profile
    from .data import task_dataset

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if mode not in ("full", "sampled"):
        raise ValueError(f"unknown mode {mode!r}; choose full or sampled")
    prof = get_profile(profile)
    out = Path(out)
    if out.exists():
        if any(out.iterdir()) and not (out / PLAN).exists():
            raise ValueError(f"{out} exists and is not a scale run directory (no {PLAN}): choose another --out; "
                             "prepare replaces only its own run directories")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    student, teachers, cfg = _stage_setup(stage, prof, seed, preset_name=preset_name, mode=mode, progress=progress)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    save_model(student.model, student.tokenizer, out / "student")
    for name, art in teachers.items():
        save_model(art.model, art.tokenizer, out / "teachers" / name)
    prompts = cfg.prompts_per_step * (cfg.group_size if stage != "grpo" else 1) * cfg.steps
    data = task_dataset(math.ceil(prompts / len(cfg.domains)), domains=cfg.domains, difficulty=cfg.difficulty,
                        seed=seed, chat=cfg.chat)
    _quiet_datasets()
    data.to_json(out / "prompts.jsonl")
    plan = {"stage": stage, "profile": prof.name, "seed": seed, "preset": preset_name if stage == "grpo" else None,
            "mode": mode if stage != "grpo" else None, "greedy": greedy, "device": prof.device,
            "domains": list(cfg.domains), "config": cfg.cache_dict(),
            "teachers": sorted(teachers), "student_key": student.path.name,
            "teacher_keys": {n: a.path.name for n, a in teachers.items()}}
    (out / PLAN).write_text(json.dumps(plan, indent=1, sort_keys=True))
    return out


def _quiet_datasets():
    """No progress bars for writing and reading a few hundred prompt rows."""
    import datasets

    datasets.disable_progress_bars()


def read_plan(run_dir) -> dict:
    """The `plan.json` of a prepared run directory; a clear error when it was never prepared."""
    path = Path(run_dir) / PLAN
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {PLAN}: prepare it first (minimopd scale prepare --out {run_dir})")
    return json.loads(path.read_text())


def online_config(plan: dict):
    from ..stages.online_config import OnlineConfig

    cfg = plan["config"]
    flat = {k: tuple(v) if isinstance(v, list) else v for part in ("sampling", "objective", "budget")
            for k, v in cfg[part].items()}
    return OnlineConfig(seed=cfg["seed"], **flat)


def build_trainer(run_dir, processes: int):
    """The trl trainer of a prepared run directory, for a launch of `processes` processes."""
    from datasets import Dataset

    from ..models import load_model
    from .trainers import distillation_trainer, grpo_trainer, routed_trainer

    run_dir = Path(run_dir)
    plan = read_plan(run_dir)
    cfg = online_config(plan)
    model, tok = load_model(run_dir / "student")
    rows = [json.loads(line) for line in (run_dir / "prompts.jsonl").read_text().splitlines() if line.strip()]
    data = Dataset.from_list(rows)      # no datasets cache: N processes read the same file at once
    common = dict(output_dir=str(run_dir / "trl"), processes=processes, device=plan["device"],
                  greedy=plan["greedy"])
    if plan["stage"] == "grpo":
        return plan, grpo_trainer(model, tok, data, cfg, reward="r1", **common)
    teachers = {name: load_model(run_dir / "teachers" / name)[0] for name in plan["teachers"]}
    if plan["stage"] == "opd" and plan["mode"] == "full":
        return plan, distillation_trainer(model, next(iter(teachers.values())), tok, data, cfg, **common)
    return plan, routed_trainer(model, teachers, tok, data, cfg, mode=plan["mode"], **common)


def train(run_dir) -> Path:
    """What each launched process runs (`python -m minimopd.scale train DIR`)."""
    from ..models import save_model

    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))    # set by torchrun / accelerate launch
    if world == 1 and "LOCAL_RANK" not in os.environ and torch.cuda.device_count() > 1:
        raise RuntimeError(f"{torch.cuda.device_count()} GPUs are visible to one process, which trl refuses "
                           "(no DataParallel): launch with torchrun --nproc_per_node N, or set CUDA_VISIBLE_DEVICES=0")
    plan, trainer = build_trainer(run_dir, world)
    state = trainer.accelerator
    if state.num_processes != world:
        raise RuntimeError(f"launched {world} processes but trl's accelerator sees {state.num_processes}: "
                           "start them with torchrun (or accelerate launch) so they join one process group")
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    state.wait_for_everyone()
    run_dir = Path(run_dir)
    if state.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tok = trainer.processing_class
        tok.padding_side = "right"                       # minimopd's convention for saved tokenizers
        save_model(model, tok, run_dir / "final", metadata={"stage": f"scale_{plan['stage']}", "plan": plan})
        steps = [h for h in trainer.state.log_history if "loss" in h]
        (run_dir / "history.json").write_text(json.dumps(
            {"processes": state.num_processes, "train_wall_s": wall, "steps": len(steps),
             "steps_per_s": len(steps) / wall if wall else None, "log": trainer.state.log_history}, indent=1))
    state.wait_for_everyone()
    return run_dir / "final"


def launch_command(run_dir, processes: int) -> list[str]:
    """The command that trains a prepared run on `processes` processes of this machine."""
    if processes == 1:
        return [sys.executable, "-m", "minimopd.scale", "train", str(run_dir)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "minimopd.scale", "train", str(run_dir)]


def launch(run_dir, processes: int = 1, *, quiet: bool = False) -> dict:
    """Train a prepared run on `processes` processes; return its `history.json`."""
    from .trainers import rows_per_process

    cfg = online_config(read_plan(run_dir))
    rows_per_process(cfg.prompts_per_step * cfg.group_size, processes)   # a clear error before launching
    cmd = launch_command(run_dir, processes)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if processes == 1:
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")   # one process, one GPU (trl refuses DataParallel)
    proc = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-3000:] if quiet else ""
        raise RuntimeError(f"the training launch failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return json.loads((Path(run_dir) / "history.json").read_text())


def evaluate_run(run_dir, *, n_per_level: int | None = None) -> dict:
    """Held-out greedy accuracy per domain of the starting student and of `final/`."""
    from ..evaluation import evaluate
    from ..models import load_model

    run_dir = Path(run_dir)
    plan = read_plan(run_dir)
    rows = {}
    for name in ("student", "final"):
        model, tok = load_model(run_dir / name)
        res = evaluate(model, tok, tasks=plan["domains"], profile=plan["profile"], seed=plan["seed"],
                       reasoning=True, n_per_level=n_per_level)
        rows[name] = {d: round(res.accuracy(d), 3) for d in plan["domains"]} | {"all": round(res.accuracy(), 3)}
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minimopd scale", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    helps = {"prepare": "write a run directory (student, teachers, prompts, plan.json) and print the launch command",
             "run": "prepare, train on --processes processes, evaluate student/ and final/"}
    for action in ("prepare", "run"):
        q = sub.add_parser(action, help=helps[action])
        q.add_argument("--stage", choices=STAGES, required=True)
        q.add_argument("--out", required=True, help="run directory (replaced if it exists)")
        q.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: as `minimopd lineage`)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--preset", default="grpo", choices=("grpo", "dr_grpo", "dapo"), help="stage grpo only")
        q.add_argument("--mode", default="full", choices=("full", "sampled"), help="stages opd and mopd")
        q.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the profile's)")
        q.add_argument("--greedy", action="store_true",
                       help="greedy rollouts (deterministic: runs on 1 and N processes compare step by step)")
        q.add_argument("--no-progress", action="store_true")
        if action == "run":
            q.add_argument("--processes", type=int, default=1, help="data-parallel processes (torchrun)")
            q.add_argument("--eval-per-level", type=int, default=None)
    q = sub.add_parser("train", help="(run by each launched process) train a prepared run directory")
    q.add_argument("run_dir")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        # Bad input gets one clear line, not a traceback (set MINIMOPD_DEBUG=1 to see it).
        if os.environ.get("MINIMOPD_DEBUG"):
            raise
        print(f"minimopd scale {args.action}: error: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    if args.action == "train":
        train(args.run_dir)
        return 0
    run_dir = prepare(args.stage, args.out, profile=args.profile, seed=args.seed, preset_name=args.preset,
                      mode=args.mode, steps=args.steps, greedy=args.greedy, progress=not args.no_progress)
    if args.action == "prepare":
        print(f"prepared {run_dir}; train it with\n  {' '.join(launch_command(run_dir, 1))}\n"
              f"  torchrun --standalone --nproc_per_node N -m minimopd.scale train {run_dir}")
        return 0
    hist = launch(run_dir, args.processes)
    losses = [round(h["loss"], 4) for h in hist["log"] if "loss" in h]
    print(f"{hist['steps']} steps on {hist['processes']} process(es), {hist['steps_per_s']:.2f} steps/s; "
          f"loss per step {losses}")
    acc = evaluate_run(run_dir, n_per_level=args.eval_per_level)
    (run_dir / "results.json").write_text(json.dumps({"accuracy": acc, **hist}, indent=1))
    domains = list(acc["student"])
    print("| model | " + " | ".join(domains) + " |\n|---|" + "---:|" * len(domains))
    for name, row in acc.items():
        print(f"| {name} | " + " | ".join(f"{row[d]:.3f}" for d in domains) + " |")
    print(f"wrote {run_dir / 'results.json'}; the trained model: {run_dir / 'final'} (minimopd.load_model)")
    return 0
