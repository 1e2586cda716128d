"""Diagnosis: the pass@k estimator against brute force, and a run whose numbers hang together."""
import itertools

import pytest

from minimopd.diagnose import diagnose, ks_up_to, learnable_examples, pass_at_k
from minimopd.tasks import get_task


def brute_pass_at_k(n, c, k):
    """Fraction of the k-subsets of n samples (c of them right) that contain a right one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 8, 2), (6, 1, 6), (5, 2, 3)])
def test_pass_at_k_matches_brute_force(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_pass_at_k_errors_and_ks():
    with pytest.raises(ValueError, match="needs at least 9 samples"):
        pass_at_k(8, 2, 9)
    assert ks_up_to(8) == [1, 2, 4, 8] and ks_up_to(6) == [1, 2, 4, 6] and ks_up_to(1) == [1]


def test_diagnose_rows_are_consistent(tok, sft_tiny):
    res = diagnose(sft_tiny, tok, ["add"], profile="smoke", n_per_level=6, samples=4, max_new_tokens=6,
                   difficulties=("easy", "hard"), split="train")   # the fixture learned train items
    assert [(r["domain"], r["difficulty"]) for r in res.rows] == [("add", "easy"), ("add", "hard")]
    for r in res.rows:
        assert r["solved"] + r["learnable"] + r["unreachable"] == pytest.approx(1.0)
        assert r["pass@k"][1] == pytest.approx(r["t1"])           # pass@1 is the mean T=1 accuracy
        assert r["pass@k"][1] <= r["pass@k"][2] <= r["pass@k"][4]
        assert r["pass@k"][4] == pytest.approx(1 - r["unreachable"])
        assert r["entropy"] > 0 and 1 <= r["length"] <= 6
        assert len(r["correct_counts"]) == 6
        counts = r["correct_counts"]                              # the table is its counts, summarised
        assert r["t1"] == pytest.approx(sum(counts) / 24)
        assert r["learnable"] == pytest.approx(sum(0 < c < 4 for c in counts) / 6)
        assert r["pass@k"][2] == pytest.approx(sum(pass_at_k(4, c, 2) for c in counts) / 6)
    assert res.meta["split"] == "train" and res.samples_per_prompt == 4
    assert "pass@4" in res.table().splitlines()[0]
    examples = get_task("add").sample(12, seed=1, difficulty=["easy", "hard"])
    kept, rates = learnable_examples(sft_tiny, tok, examples, samples=4, max_new_tokens=6)
    assert len(rates) == 12 and all(r in (0.0, 0.25, 0.5, 0.75, 1.0) for r in rates)
    assert kept == [e for e, r in zip(examples, rates) if 0 < r < 1]


def test_prompt_pool_is_drawn_in_shuffled_passes():
    from minimopd.stages.online import OnlineConfig, sample_examples
    pool = get_task("add").sample(10, seed=3)
    cfg = OnlineConfig(prompts_per_step=4, seed=1)
    drawn = [e for step in range(5) for e in sample_examples(cfg, step, pool)]   # two full passes
    assert sorted(e.prompt for e in drawn[:10]) == sorted(e.prompt for e in pool)
    assert sorted(e.prompt for e in drawn[10:]) == sorted(e.prompt for e in pool)
    assert [e.prompt for e in drawn[:10]] != [e.prompt for e in pool]             # shuffled
    assert drawn == [e for step in range(5) for e in sample_examples(cfg, step, pool)]
    with pytest.raises(ValueError, match="empty prompt pool"):
        sample_examples(cfg, 0, [])


def test_select_prompts_keeps_the_learnable_ones(tok, sft_tiny):
    from minimopd.diagnose import PromptSelection, select_prompts
    from minimopd.stages.online import OnlineConfig
    cfg = OnlineConfig(domains=("add",), difficulty="easy", max_new_tokens=6, seed=0)
    pool, info = select_prompts(sft_tiny, tok, cfg, PromptSelection(candidates=16, samples=4), seed=0)
    every = get_task("add").sample(16, split="train", seed=10_007, difficulty="easy")
    kept, rates = learnable_examples(sft_tiny, tok, every, samples=4, max_new_tokens=6, seed=0)
    assert info["candidates"] == 16 and info["kept"] == len(pool) and pool == kept
    assert info["mean_pass_rate"] == pytest.approx(sum(rates) / 16)
    # and what it cost: the same 16 x 4 samples, counted token by token (one batch of prompts)
    from minimopd.models import count_parameters
    from minimopd.rollout import generate
    ro = generate(sft_tiny, tok, [e.prompt for e in every], num_samples=4, max_new_tokens=6, temperature=1.0,
                  seed=0, chat=True)
    assert info["tokens_generated"] == int(ro.completion_mask.sum()) > 0
    assert info["forward_tokens"] == int(ro.attention_mask.sum()) > info["tokens_generated"]
    assert info["flops"] == 2.0 * count_parameters(sft_tiny) * info["forward_tokens"]
    assert info["wall_time"] > 0


def test_pass_at_k_figure_draws_every_curve_from_the_rows():
    from minimopd.diagnose import Diagnosis
    from minimopd.plots import pass_at_k_figure

    def diag(shift):
        rows = [{"domain": d, "difficulty": lv, "pass@k": {1: 0.2 + shift, 2: 0.3 + shift, 4: 0.5}}
                for d in ("add", "count") for lv in ("easy", "hard")]
        return Diagnosis(rows=rows, samples_per_prompt=4)
    fig = pass_at_k_figure({"sft": diag(0.0), "rl": diag(0.1)})
    assert len(fig.data) == 8                                   # 2 models x 2 domains x 2 levels
    rl_add_hard = next(t for t in fig.data if t.name == "rl hard" and t.xaxis == "x")
    assert list(rl_add_hard.x) == [1, 2, 4] and list(rl_add_hard.y) == pytest.approx([0.3, 0.4, 0.5])
    assert pass_at_k_figure({"sft": diag(0.0)}, domains=["count"]).data[0].xaxis == "x"
