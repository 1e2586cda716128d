"""An out-of-memory error names the stage and the batch knobs to lower, not a CUDA traceback."""
import copy

import pytest
import torch

from minimopd.memory import OutOfMemoryHint, oom_hint


def _fake_oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)")


def test_oom_hint_names_stage_and_knobs_and_passes_other_errors():
    with pytest.raises(OutOfMemoryHint, match=r"online: .*group_size=8.*Lower one of these"):
        with oom_hint("online", "group_size=8"):
            _fake_oom()
    with pytest.raises(ValueError, match="unrelated"):
        with oom_hint("online", "group_size=8"):
            raise ValueError("unrelated")


def test_online_loop_turns_oom_into_a_hint(monkeypatch, sft_tiny, tok):
    import minimopd.stages.online as online
    monkeypatch.setattr(online, "generate", _fake_oom)
    cfg = online.OnlineConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4)
    with pytest.raises(OutOfMemoryHint, match=r"prompts_per_step=2, group_size=2, max_new_tokens=4"):
        online.train_online(copy.deepcopy(sft_tiny), tok, cfg, progress=False)


def test_offline_loop_turns_oom_into_a_hint(monkeypatch, tiny_model, tok):
    from minimopd.stages.sft import SFTConfig, train_sft
    import minimopd.losses as losses
    monkeypatch.setattr(losses, "sft_loss", _fake_oom)
    pairs = [("What is 1+2?", "3")] * 4
    with pytest.raises(OutOfMemoryHint, match=r"sft: .*a batch of 2 sequences"):
        train_sft(copy.deepcopy(tiny_model), tok, pairs, SFTConfig(steps=1, batch_size=2), progress=False)
