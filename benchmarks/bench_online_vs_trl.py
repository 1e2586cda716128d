"""Online step time: minimopd's `train_online` vs trl's trainers, for GRPO and for on-policy
distillation.

    --method grpo   ours: the `grpo` preset with the task verifier; trl: `GRPOTrainer`
    --method opd    ours: the `opd_full` preset (exact full-vocabulary reverse KL) with a
                    `TeacherSignal(teacher, mode="full")`; trl: `DistillationTrainer` with
                    beta=1 (its generalized JSD at beta=1 is the reverse KL), one completion per
                    prompt on both sides, a second model of the same size (seed 1) as the teacher

Both trainers run in ONE process, one after the other, on the same configuration:

- the same weights: one `build_model(size, tok, seed=0)` saved to a temp dir; ours loads it with
  `load_model`, trl gets the directory (fp32, so nothing is rebuilt from an empty name);
- the same prompts in the same order: step i of both is `sample_examples(cfg, i)` (our task
  generator, train split), given to trl as a conversational dataset `[{"role": "user", ...}]`
  with `shuffle_dataset=False`, rendered by the same tokenizer chat template;
- the same batch: P prompts x G samples per optimizer step. In trl 1.16 `per_device_train_batch_size`
  counts completions, not prompts, so it is P*G with `num_generations=G`, `steps_per_generation=1`
  (hence `generation_batch_size=P*G`), `gradient_accumulation_steps=1`;
- the same update: GRPO: loss_type / aggregation "grpo", group-std advantages, eps 0.2, beta 0
  (no reference model), one update per rollout batch (trl `num_iterations=1`; ours epochs=1,
  minibatches=1); OPD: reverse KL over the full vocabulary, token-level mean over completion
  tokens on both sides; torch AdamW(0.9, 0.95), no weight decay, constant lr, grad-norm clip
  1.0 (trl: optim=adamw_torch; ours: torch's fused AdamW, the library's default);
- the same sampling: temperature 1.0, top-p 1, no top-k, `max_new_tokens`, stop at `<|end|>`;
- the same reward: `minimopd.rewards.accuracy_reward`, wrapped in trl's signature; the answer
  travels in a dataset column, the completion is re-decoded from `completion_ids` our way;
- fp32, no gradient checkpointing, no vLLM, no saving, `report_to=[]`, no progress bars. trl
  logs every step (`logging_steps=1`, printing callbacks removed) only so that its
  `state.log_history` holds the per-step completion lengths; ours keeps its history as always.

What is timed: wall time per optimizer step of the whole training loop, i.e. the difference of
consecutive step ends (ours: the history's cumulative `time`; trl: a `TrainerCallback.on_step_end`
clock), so sampling, reward, loss, backward, optimizer and per-step logging are all included.
Model construction and trainer set-up are not. The first `--warmup` steps of each are dropped;
median and mean of the next `--steps` are reported. Generated tokens per step come from our
history (`tokens_generated`) and from trl's log history (`completions/mean_length` x P*G); a
randomly initialised model rarely says `<|end|>`, so both mostly run to `max_new_tokens`.
Compare the `tokens/step` column before the times: unequal lengths make unequal work; the
`tok/s` columns (generated tokens per second of whole-step time) normalise for it.

Run from the repo root (CPU; on a shared machine pin threads with --threads 1):

    python benchmarks/bench_online_vs_trl.py --threads 1                  # tiny, 8x4, 32 tokens
    python benchmarks/bench_online_vs_trl.py --size small --steps 5 --threads 1
    python benchmarks/bench_online_vs_trl.py --rounds 2                   # ours,trl then trl,ours
    python benchmarks/bench_online_vs_trl.py --method opd --threads 1     # OPD vs DistillationTrainer
    python benchmarks/bench_online_vs_trl.py --quick                      # seconds (the test)
    python benchmarks/bench_online_vs_trl.py --out BENCHMARKS.md          # append the table
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))      # benchmarks/common.py

import torch  # noqa: E402

from common import append, load_average, machine, peak_memory  # noqa: E402
from minimopd.models import build_model, count_parameters, load_model, save_model  # noqa: E402
from minimopd.rewards import accuracy_reward  # noqa: E402
from minimopd.signals import TeacherSignal  # noqa: E402
from minimopd.stages.online import OnlineConfig, preset, sample_examples, train_online  # noqa: E402
from minimopd.tasks import Example  # noqa: E402
from minimopd.threads import set_threads  # noqa: E402
from minimopd.tokenizer import build_tokenizer  # noqa: E402

COLUMNS = ["model (params)", "prompts x samples", "max new tokens", "tokens/step ours / trl",
           "ours s/step (median / mean)", "trl s/step (median / mean)", "ours tok/s", "trl tok/s",
           "ratio trl/ours", "peak RSS ours / trl (MB)"]


class TrlUnavailable(RuntimeError):
    """trl (or its GRPOTrainer) cannot be imported or constructed here, e.g. offline."""


def step_times(ends: list) -> list:
    """Per-step increments of a cumulative series [start, end_0, end_1, ...] (seconds, tokens)."""
    return [b - a for a, b in zip(ends, ends[1:])]


def run_ours(model_dir, tok, cfg: OnlineConfig, device: str, teacher_dir=None):
    model, _ = load_model(model_dir)
    signal = None if teacher_dir is None else TeacherSignal(load_model(teacher_dir)[0], mode="full")
    res = train_online(model, tok, cfg, signal=signal, device=device, progress=False)
    return (step_times([0.0] + [r["time"] for r in res.history]),
            step_times([0] + [r["tokens_generated"] for r in res.history]))


def trl_dataset(cfg: OnlineConfig):
    from datasets import Dataset
    rows = [ex for step in range(cfg.steps) for ex in sample_examples(cfg, step)]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": ex.prompt}], "answer": ex.answer,
                               "domain": ex.domain, "difficulty": ex.difficulty} for ex in rows])


def _trl_common(cfg: OnlineConfig, device: str, out_dir: str, fields) -> dict:
    """The TrainingArguments both trl trainers get: same optimiser, schedule, precision, logging."""
    return dict(
        output_dir=out_dir, max_steps=cfg.steps, seed=cfg.seed, use_cpu=device == "cpu",
        gradient_accumulation_steps=1, shuffle_dataset=False, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, top_p=1.0, top_k=0, learning_rate=cfg.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch",
        adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=cfg.grad_clip, bf16=False, fp16=False,
        gradient_checkpointing=False, use_vllm=False, logging_steps=1, save_strategy="no", report_to=[],
        disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
        # transformers 5 renamed gradient_checkpointing; set the new name too (trl defaults it on)
        **({"activation_checkpointing": False} if "activation_checkpointing" in fields else {}))


def _step_clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.ends = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
    return StepClock()


def make_trl_distiller(model_dir, teacher_dir, tok, cfg: OnlineConfig, device: str, out_dir: str):
    """A DistillationTrainer configured like `cfg` (reverse KL, one completion per prompt)."""
    try:
        from transformers import PrinterCallback, ProgressCallback
        from trl import DistillationConfig, DistillationTrainer
    except Exception as exc:  # noqa: BLE001 - any import failure means "no trl here"
        raise TrlUnavailable(f"cannot import trl's DistillationTrainer: {type(exc).__name__}: {exc}") from exc
    args = DistillationConfig(per_device_train_batch_size=cfg.prompts_per_step, beta=1.0,
                              **_trl_common(cfg, device, out_dir, DistillationConfig.__dataclass_fields__))
    clock = _step_clock()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer = DistillationTrainer(model=str(model_dir), teacher_model=str(teacher_dir), args=args,
                                          train_dataset=trl_dataset(cfg), processing_class=tok, callbacks=[clock])
    except Exception as exc:  # noqa: BLE001
        raise TrlUnavailable(f"cannot construct trl's DistillationTrainer: {type(exc).__name__}: {exc}") from exc
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, clock


def make_trl_trainer(model_dir, tok, cfg: OnlineConfig, device: str, out_dir: str):
    """A GRPOTrainer configured like `cfg`, plus the callback that records its step-end times."""
    try:
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except Exception as exc:  # noqa: BLE001 - any import failure means "no trl here"
        raise TrlUnavailable(f"cannot import trl's GRPOTrainer: {type(exc).__name__}: {exc}") from exc
    pad, eos = tok.pad_token_id, tok.eos_token_id

    def accuracy(prompts, completions, completion_ids, answer, domain, difficulty, **_):
        # Decode like minimopd.rollout.generate (drop <|end|>/<|pad|>, keep <answer> tags); trl's
        # own `completions` come from skip_special_tokens=True, which would drop the tags.
        texts = [tok.decode([t for t in ids if t not in (eos, pad)], skip_special_tokens=False)
                 for ids in completion_ids]
        return [accuracy_reward(Example(p[-1]["content"], a, d, lvl), t)
                for p, t, a, d, lvl in zip(prompts, texts, answer, domain, difficulty)]

    n = cfg.prompts_per_step * cfg.group_size
    args = GRPOConfig(
        per_device_train_batch_size=n, steps_per_generation=1, num_generations=cfg.group_size,
        num_iterations=1, loss_type="grpo", scale_rewards="group", beta=0.0, epsilon=cfg.eps_low,
        **_trl_common(cfg, device, out_dir, GRPOConfig.__dataclass_fields__))
    clock = _step_clock()
    try:
        with warnings.catch_warnings():   # trl reads the deprecated is_gradient_checkpointing
            warnings.simplefilter("ignore", FutureWarning)
            trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[accuracy], args=args,
                                  train_dataset=trl_dataset(cfg), processing_class=tok, callbacks=[clock])
    except Exception as exc:  # noqa: BLE001
        raise TrlUnavailable(f"cannot construct trl's GRPOTrainer: {type(exc).__name__}: {exc}") from exc
    for cb in (PrinterCallback, ProgressCallback):   # logs stay in state.log_history, unprinted
        trainer.remove_callback(cb)
    return trainer, clock


def run_trl(model_dir, tok, cfg: OnlineConfig, device: str, teacher_dir=None):
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out_dir:
        if teacher_dir is None:
            trainer, clock = make_trl_trainer(model_dir, tok, cfg, device, out_dir)
        else:
            trainer, clock = make_trl_distiller(model_dir, teacher_dir, tok, cfg, device, out_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer.train()
    n = cfg.prompts_per_step * cfg.group_size
    lengths = [row["completions/mean_length"] for row in trainer.state.log_history
               if "completions/mean_length" in row]
    return step_times(clock.ends), [round(m * n) for m in lengths]


def summarise(t, k):
    return {"median": statistics.median(t), "mean": statistics.mean(t),
            "tokens": statistics.mean(k) if k else float("nan"),
            "tok_s": sum(k) / sum(t) if k else float("nan"), "n": len(t)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="grpo", choices=["grpo", "opd"],
                   help="grpo: vs GRPOTrainer; opd: on-policy distillation vs DistillationTrainer")
    p.add_argument("--size", default="tiny", help="model size: tiny, mini, small, base (default tiny)")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps of each trainer")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8)")
    p.add_argument("--samples", type=int, default=None,
                   help="completions per prompt (default 4 for grpo, 1 for opd)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="completion budget (default 32)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--domains", nargs="+", default=["add"], help="task domains of the prompts")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat both runs; odd rounds run ours first, even rounds trl first")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice); "
                   "use 1 on a shared machine")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true",
                   help="tiny model, 2x2, 8 tokens, 1 warm-up + 1 timed step (the test)")
    p.add_argument("--out", help="append the table (with command, machine, date) to this file")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.quick:
        args.size, args.prompts, args.max_new_tokens = "tiny", 2, 8
        args.samples = 1 if args.method == "opd" else 2
        args.steps, args.warmup, args.rounds = 1, 1, 1
    if args.samples is None:
        args.samples = 1 if args.method == "opd" else 4
    if args.method == "opd" and args.samples != 1:
        raise SystemExit("--method opd: trl's DistillationTrainer samples one completion per prompt; use --samples 1")
    threads_before = torch.get_num_threads()
    if args.threads:   # both trainers: torch's setting for trl, minimopd's own thread policy for ours
        torch.set_num_threads(args.threads)
        set_threads(args.threads)
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads_before)
        set_threads(None)


def _run(args, argv) -> str:
    tok = build_tokenizer()
    cfg = preset("grpo" if args.method == "grpo" else "opd_full", OnlineConfig(
        steps=args.warmup + args.steps, prompts_per_step=args.prompts, group_size=args.samples,
        max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr, epochs=1, minibatches=1,
        kl_beta=0.0, domains=tuple(args.domains), seed=0))
    load_before = load_average()
    timed = {"ours": ([], []), "trl": ([], [])}     # name -> (seconds per step, tokens per step)
    mem = {"ours": 0.0, "trl": 0.0}                  # name -> largest RSS rise of one run (MB)
    with tempfile.TemporaryDirectory(prefix="bench-online-model-") as model_dir:
        model = build_model(args.size, tok, seed=0)
        params = count_parameters(model)
        save_model(model, tok, model_dir)
        teacher_dir = None
        if args.method == "opd":
            teacher_dir = Path(model_dir) / "teacher"
            save_model(build_model(args.size, tok, seed=1), tok, teacher_dir)
        for r in range(args.rounds):
            for name in (("ours", "trl") if r % 2 == 0 else ("trl", "ours")):
                run = run_ours if name == "ours" else run_trl
                with peak_memory(args.device) as used:
                    t, k = run(model_dir, tok, cfg, args.device, teacher_dir)
                mem[name] = max(mem[name], used["rss_mb"])
                t, k = t[args.warmup:], k[args.warmup:]
                s = summarise(t, k)
                print(f"  round {r + 1} {name}: {s['median']:.3f} s/step median, "
                      f"{s['tokens']:.0f} tokens/step", file=sys.stderr, flush=True)
                timed[name][0].extend(t)
                timed[name][1].extend(k)
    load_after = load_average()
    ours, trl_ = summarise(*timed["ours"]), summarise(*timed["trl"])
    row = (f"| {args.size} ({params / 1e6:.2f}M) | {args.prompts} x {args.samples} | {args.max_new_tokens} | "
           f"{ours['tokens']:.0f} / {trl_['tokens']:.0f} | {ours['median']:.3f} / {ours['mean']:.3f} | "
           f"{trl_['median']:.3f} / {trl_['mean']:.3f} | {ours['tok_s']:,.0f} | {trl_['tok_s']:,.0f} | "
           f"{trl_['median'] / ours['median']:.2f}x | {mem['ours']:.0f} / {mem['trl']:.0f} |")
    command = "python benchmarks/bench_online_vs_trl.py " + " ".join(
        map(shlex.quote, argv if argv is not None else sys.argv[1:]))
    lines = [
        (f"### Online RL step: minimopd `train_online` (grpo) vs trl `GRPOTrainer` ({datetime.date.today()})"
         if args.method == "grpo" else
         f"### On-policy distillation step: minimopd `train_online` (opd_full) vs trl `DistillationTrainer` "
         f"({datetime.date.today()})"),
        "",
        f"- command: `{command.strip()}` ({args.warmup} warm-up + {ours['n']} timed steps per trainer, "
        f"{args.rounds} round(s); device {args.device})",
        f"- machine: {machine(args.device, extra=f', trl {_trl_version()}')}; "
        f"{torch.get_num_threads()} intra-op threads",
        f"- 1-min load average: {load_before:.2f} before, {load_after:.2f} after",
        "- tokens/step: completion tokens (final `<|end|>` included) generated per optimizer step; "
        "both samplers stop at `<|end|>`, with different random streams, so counts differ by noise",
        "- tok/s: generated tokens per second of whole-step time; ratio = trl median s/step / "
        "ours median s/step (above 1x: ours is faster)",
        "- peak RSS: the largest rise of the process's resident set size during one whole run "
        "(model loading and trainer set-up included), sampled every 5 ms",
        "", "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1), row]
    table = "\n".join(lines) + "\n"
    print(table)
    append(args.out, table)
    return table


def _trl_version() -> str:
    import trl
    return trl.__version__


if __name__ == "__main__":
    main()
