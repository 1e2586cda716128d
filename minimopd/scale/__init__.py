"""Outgrowing one machine: minimopd's online stages on trl trainers, launched on N processes.

The maths stays minimopd's; the engine becomes trl's (`GRPOTrainer`, `DistillationTrainer`) and
torch.distributed's (one process per GPU, or per CPU group with gloo). See `launch` for the
commands, `trainers` for what maps onto what, `routed` for multi-teacher routing on trl.

    from minimopd.scale import task_dataset, routed_trainer
    data = task_dataset(64)                                     # prompts + teacher_id column
    trainer = routed_trainer(student, {"add": t_add, ...}, tok, data, cfg, output_dir="out")
    trainer.train()

Importing this package needs trl (a dependency of minimopd); nothing else in minimopd does.
"""
from __future__ import annotations

from .data import example_rows, reward_funcs, task_dataset, trl_reward
from .launch import evaluate_run, launch, launch_command, prepare, train
from .routed import RoutedDistillationTrainer, routed_token_loss, teacher_tensors
from .trainers import distillation_args, distillation_trainer, grpo_args, grpo_trainer, routed_trainer

__all__ = ["RoutedDistillationTrainer", "distillation_args", "distillation_trainer", "evaluate_run",
           "example_rows", "grpo_args", "grpo_trainer", "launch", "launch_command", "prepare",
           "reward_funcs", "routed_token_loss", "routed_trainer", "task_dataset", "teacher_tensors",
           "train", "trl_reward"]
