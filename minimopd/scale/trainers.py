"""trl trainers built from minimopd pieces: the same stage settings, trl's engine.

    grpo_trainer          trl `GRPOTrainer`: minimopd tasks as reward functions, an `OnlineConfig`
                          of the `grpo` / `dr_grpo` / `dapo` presets as trl's loss settings
    distillation_trainer  trl `DistillationTrainer` for one teacher: exact reverse KL (beta = 1)
    routed_trainer        `RoutedDistillationTrainer`: one teacher per `teacher_id` (MOPD)

What maps onto what (`grpo_args`, `distillation_args`), and what does not:

| minimopd (`OnlineConfig`)            | trl                                                      |
|--------------------------------------|----------------------------------------------------------|
| prompts_per_step x group_size        | per_device_train_batch_size x processes (completions)    |
| group_size                           | num_generations (GRPO); distillation samples each prompt once |
| aggregation grpo / dr_grpo / dapo    | loss_type grpo / dr_grpo / dapo                          |
| advantage group / group_nostd        | scale_rewards "group" / "none"                           |
| eps_low, eps_high, kl_beta           | epsilon, epsilon_high, beta (GRPO's k3 KL to the reference) |
| lr, steps, grad_clip, epochs         | learning_rate (constant), max_steps, max_grad_norm, num_iterations |
| max_new_tokens, temperature, top_p   | max_completion_length, temperature, top_p                |

Not carried over: DAPO's dynamic sampling and over-long shaping (trl's GRPOTrainer has neither
in this form), the `rloo` / `gae` / `teacher_token` estimators on GRPOTrainer (PPO runs on
minimopd's own loop; sampled-token distillation on `routed_trainer`), fresh prompts drawn every
step (trl iterates over a dataset: `task_dataset` draws as many prompts as the run uses).
"""
from __future__ import annotations

from typing import Mapping

from ..stages.online_config import OnlineConfig

SCALE_ADVANTAGES = {"group": "group", "group_nostd": "none"}


def rows_per_process(rows_per_step: int, processes: int) -> int:
    """Completions each process samples per optimiser step; a clear error when the step's rows
    cannot be split evenly (more processes than rows, or a remainder)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if processes > rows_per_step:
        raise ValueError(f"{processes} processes for {rows_per_step} completions per step: each process needs at "
                         f"least one row. Launch at most {rows_per_step} processes or raise prompts_per_step.")
    if rows_per_step % processes:
        raise ValueError(f"{rows_per_step} completions per step do not split evenly over {processes} processes; "
                         f"use a process count that divides {rows_per_step}")
    return rows_per_step // processes


def check_rows(dataset, needed: int, what: str) -> None:
    """The dataset holds at least one step: trl's sampler would otherwise yield no batch at all."""
    if len(dataset) < needed:
        raise ValueError(f"the dataset has {len(dataset)} rows but one step uses {needed} {what}: "
                         f"give it at least that many (task_dataset(n_per_domain) has n_per_domain x domains rows)")


def _common(cfg: OnlineConfig, *, output_dir: str, processes: int, rows_per_step: int, device: str,
            greedy: bool) -> dict:
    return dict(
        output_dir=output_dir, per_device_train_batch_size=rows_per_process(rows_per_step, processes),
        gradient_accumulation_steps=1, max_steps=cfg.steps, learning_rate=cfg.lr,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=cfg.grad_clip,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        generation_kwargs={"do_sample": False} if greedy else None,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=device == "cpu", bf16=False, fp16=False, disable_dropout=True,
        activation_checkpointing=False,   # trl defaults to recomputing activations: not needed at these sizes
        dataloader_num_workers=0, disable_tqdm=True)


def grpo_args(cfg: OnlineConfig, *, output_dir: str, processes: int = 1, device: str = "cpu",
              reward_weights=None, greedy: bool = False):
    """trl `GRPOConfig` of a GRPO-family `OnlineConfig` (see the module's table)."""
    from trl import GRPOConfig

    if cfg.loss != "clipped_pg" or cfg.advantage not in SCALE_ADVANTAGES:
        raise ValueError(f"GRPOTrainer runs the grpo / dr_grpo / dapo presets (group advantages, clipped PG); "
                         f"this config has advantage={cfg.advantage!r}, loss={cfg.loss!r}. Run it with "
                         "minimopd's own loop (minimopd.stages.train_online)")
    return GRPOConfig(
        **_common(cfg, output_dir=output_dir, processes=processes, device=device, greedy=greedy,
                  rows_per_step=cfg.prompts_per_step * cfg.group_size),
        num_generations=cfg.group_size, loss_type=cfg.aggregation, scale_rewards=SCALE_ADVANTAGES[cfg.advantage],
        epsilon=cfg.eps_low, epsilon_high=cfg.eps_high if cfg.eps_high is not None else cfg.eps_low,
        beta=cfg.kl_beta, num_iterations=cfg.epochs, reward_weights=reward_weights,
        mask_truncated_completions=False)


def distillation_args(cfg: OnlineConfig, *, output_dir: str, processes: int = 1, device: str = "cpu",
                      greedy: bool = False):
    """trl `DistillationConfig` of an OPD `OnlineConfig`: beta = 1 (reverse KL), the step's
    completions (prompts_per_step x group_size) spent on as many distinct prompts."""
    from trl import DistillationConfig

    return DistillationConfig(
        **_common(cfg, output_dir=output_dir, processes=processes, device=device, greedy=greedy,
                  rows_per_step=cfg.prompts_per_step * cfg.group_size), beta=1.0)


def grpo_trainer(model, tokenizer, dataset, cfg: OnlineConfig, *, reward: str = "r1", output_dir: str,
                 processes: int = 1, device: str = "cpu", greedy: bool = False):
    """trl `GRPOTrainer` on `dataset` (`task_dataset`) with a named minimopd reward (`data.REWARDS`)."""
    from trl import GRPOTrainer

    from .data import reward_funcs

    check_rows(dataset, cfg.prompts_per_step, "prompts")
    funcs, weights = reward_funcs(reward, tokenizer)
    args = grpo_args(cfg, output_dir=output_dir, processes=processes, device=device, reward_weights=weights,
                     greedy=greedy)
    return GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                       processing_class=left_padded(tokenizer))


def distillation_trainer(model, teacher, tokenizer, dataset, cfg: OnlineConfig, *, output_dir: str,
                         processes: int = 1, device: str = "cpu", greedy: bool = False):
    """trl `DistillationTrainer`: one teacher, exact reverse KL over the full vocabulary."""
    from trl import DistillationTrainer

    from .routed import teacher_signals

    teacher_signals({"teacher": teacher}, model, tokenizer)      # the checks; trl scores the teacher itself
    check_rows(dataset, cfg.prompts_per_step * cfg.group_size, "prompts (one completion each)")
    args = distillation_args(cfg, output_dir=output_dir, processes=processes, device=device, greedy=greedy)
    return DistillationTrainer(model=model, teacher_model=teacher, args=args, train_dataset=dataset,
                               processing_class=left_padded(tokenizer))


def routed_trainer(model, teachers: Mapping, tokenizer, dataset, cfg: OnlineConfig, *, mode: str = "full",
                   output_dir: str, processes: int = 1, device: str = "cpu", placement: str = "swap",
                   weights: Mapping[str, float] | None = None, greedy: bool = False):
    """`RoutedDistillationTrainer` (MOPD): each row's teacher named by its `teacher_id`."""
    from .routed import RoutedDistillationTrainer

    check_rows(dataset, cfg.prompts_per_step * cfg.group_size, "prompts (one completion each)")
    args = distillation_args(cfg, output_dir=output_dir, processes=processes, device=device, greedy=greedy)
    return RoutedDistillationTrainer(model, teachers, args=args, train_dataset=dataset,
                                     processing_class=left_padded(tokenizer), mode=mode, weights=weights,
                                     placement=placement, eps_low=cfg.eps_low, eps_high=cfg.eps_high)


def left_padded(tokenizer):
    """trl generates from left-padded prompts; minimopd's tokenizer pads on the right by default."""
    tokenizer.padding_side = "left"
    return tokenizer
