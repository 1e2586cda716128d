"""The thread policy: env overrides, the user's choice, tiny models on one thread, restore after."""
import pytest
import torch

from minimopd import threads


def test_env_user_and_model_size_rules(monkeypatch, tiny_model):
    monkeypatch.setattr(threads, "_user_threads", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MINIMOPD_THREADS", raising=False)
    assert threads.threads_for(tiny_model) == 1                  # tiny models: dispatch-bound
    monkeypatch.setattr(threads, "idle_cores", lambda: 1.6)
    big = torch.nn.Linear(1000, 1000)                              # 1M parameters
    assert threads.threads_for(big) == min(threads.usable_cores(), 2)
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.2)        # a busy machine: one thread
    assert threads.threads_for(big) == 1
    threads.set_threads(3)
    try:
        assert threads.threads_for(tiny_model) == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.threads_for(tiny_model) is None             # torch already honours OMP
        monkeypatch.setenv("MINIMOPD_THREADS", "4")
        assert threads.threads_for(tiny_model) == 4                # MINIMOPD_THREADS wins
    finally:
        threads.set_threads(None)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MINIMOPD_THREADS", bad)
        with pytest.raises(ValueError, match=f"MINIMOPD_THREADS={bad!r} is not a positive integer"):
            threads.threads_for(tiny_model)
    with pytest.raises(ValueError, match="positive integer or None"):
        threads.set_threads(0)


def test_stage_threads_sets_and_restores(monkeypatch, tiny_model):
    monkeypatch.setattr(threads, "_user_threads", None)
    monkeypatch.setenv("MINIMOPD_THREADS", "2")
    before = torch.get_num_threads()
    with threads.stage_threads(tiny_model) as n:
        assert n == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("MINIMOPD_THREADS", "1")
        with threads.stage_threads(tiny_model) as inner:           # nested: the outer choice stays
            assert inner == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_idle_cores_is_a_plausible_number():
    idle = threads.idle_cores()
    assert 0.0 <= idle <= (threads.os.cpu_count() or 1) + 0.5
