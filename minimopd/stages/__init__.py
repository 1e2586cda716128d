"""One file per stage of the lineage: pretrain, sft (and, as the course grows, reward_model, dpo,
rejection, online). Offline stages share `common.train_offline`."""
