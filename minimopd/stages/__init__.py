"""One file per stage of the lineage: pretrain, sft, reward_model, dpo and online (every RL and
on-policy distillation method is a setting of the one online loop). Offline stages share
`common.train_offline`; rejection sampling is SFT on best-of-K samples (`comparisons.best_of_k`)."""
