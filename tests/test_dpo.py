"""DPO and the data of the preference recipes after InstructGPT: sequence log-probs (value and
gradient against a loop), the DPO step against a reference computed once, the pair layout, bad
pairs, a tiny model that learns its pairs; best-of-K, reward-ranked and delta pairs; the KL and
gold of a policy on its own samples; the llama2 / llama3 / olmo3_delta recipes on smoke."""
import copy
import math

import pytest
import torch

from minimopd import losses
from minimopd.comparisons import Scored, best_of_k, delta_pairs, drift, judged_pairs, ranked_pairs
from minimopd.models import sequence_logprobs
from minimopd.stages.dpo import TIE_NATS, DPOConfig, attach_reference, collate_pairs, dpo_step, pair_rows, train_dpo
from minimopd.tasks import get_task, preference_pairs

NOTES = "Write a note to Ana about tea."


# --------------------------------------------------------------------------- sequence log-probs

def test_sequence_logps_is_the_masked_sum_of_token_logprobs_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    got = losses.sequence_logps(lp, mask)
    want = [sum(lp[b, t].item() for t in range(7) if mask[b, t]) for b in range(3)]
    assert got.tolist() == pytest.approx(want, rel=1e-12) and got[2].item() == 0.0
    got.sum().backward()
    assert torch.equal(lp.grad, mask)                           # d/d lp = 1 on the response, 0 elsewhere
    assert torch.autograd.gradcheck(lambda x: losses.sequence_logps(x, mask), (lp.detach().requires_grad_(),))


# --------------------------------------------------------------------------- pairs and the DPO step

@pytest.fixture(scope="module")
def pairs():
    return preference_pairs(get_task("notes").sample(24, seed=3), seed=3)


def test_pair_rows_and_collate_put_chosen_first_and_mark_only_responses(tok, pairs):
    rows = pair_rows(tok, pairs[:3])
    batch = collate_pairs(rows, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 6 and "ref_chosen" not in batch
    for i, p in enumerate(pairs[:3]):
        for row, text in ((i, p["chosen"]), (3 + i, p["rejected"])):
            ids = batch["input_ids"][row][batch["loss_mask"][row].bool()].tolist()
            assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1]) == tok.decode(tok(text, add_special_tokens=False)["input_ids"])
    for r, ref in zip(rows, [(-1.0, -2.0), (-3.0, -4.0), (-5.0, -6.0)]):
        r["ref"] = ref
    batch = collate_pairs(rows, tok.pad_token_id)
    assert batch["ref_chosen"].tolist() == [-1.0, -3.0, -5.0] and batch["ref_rejected"].tolist() == [-2.0, -4.0, -6.0]


def test_bad_pairs_are_clear_errors(tok):
    with pytest.raises(ValueError, match="no preference pairs"):
        pair_rows(tok, [])
    with pytest.raises(ValueError, match="same response"):
        pair_rows(tok, [{"prompt": NOTES, "chosen": "Hi Ana.", "rejected": "Hi Ana."}])
    with pytest.raises(ValueError, match=r"lacks \['rejected'\]"):
        pair_rows(tok, [{"prompt": NOTES, "chosen": "Hi Ana."}])
    with pytest.raises(ValueError, match="longer than the model's context"):
        pair_rows(tok, [{"prompt": NOTES, "chosen": "Hi Ana. " * 40, "rejected": "Bye."}], context=64)
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOConfig(beta=0)
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="only applies to loss_type='sigmoid'"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)


@pytest.mark.parametrize("norm", [False, True], ids=["sums", "length_normalised"])
def test_dpo_step_equals_the_loss_of_a_loop_over_pairs(tok, tiny_model, pairs, norm):
    """The step's loss is the mean over pairs of -log sigma(beta h), h built from each response's
    summed log-probs under the policy and the (precomputed) reference, each scored alone; with
    `length_normalize` (Tülu 3) each response's log-ratio is divided by its token count. Value
    and gradient both equal the loop's."""
    policy = copy.deepcopy(tiny_model)
    with torch.no_grad():                                       # a policy that differs from the reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = pair_rows(tok, pairs[:4])
    attach_reference(tiny_model, rows, tok.pad_token_id, batch_size=3)
    beta = 5.0 if norm else 0.3
    cfg = DPOConfig(beta=beta, length_normalize=norm)
    loss, metrics = dpo_step(policy, collate_pairs(rows, tok.pad_token_id), cfg)

    def alone(model, ids, mask):
        ids_t = torch.tensor([ids])
        lp = sequence_logprobs(model, ids_t, torch.ones_like(ids_t))
        return (lp[0] * torch.tensor(mask, dtype=lp.dtype)).sum() / (sum(mask) if norm else 1)

    per_pair, margins = [], []
    for r in rows:
        h_c = alone(policy, *r["chosen"]) - alone(tiny_model, *r["chosen"]).detach()
        h_r = alone(policy, *r["rejected"]) - alone(tiny_model, *r["rejected"]).detach()
        assert r["ref"][0] == pytest.approx(alone(tiny_model, *r["chosen"]).item() * (sum(r["chosen"][1]) if norm else 1),
                                            abs=1e-4)
        per_pair.append(torch.nn.functional.softplus(-beta * (h_c - h_r)))
        margins.append(beta * float(h_c - h_r))
    want = torch.stack(per_pair).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert metrics["reward_margin"].item() == pytest.approx(sum(margins) / 4, abs=1e-5)
    tie = beta * TIE_NATS                                       # a margin this close to 0 counts half
    assert metrics["reward_accuracy"].item() == sum(0.5 if abs(m) <= tie else float(m > 0) for m in margins) / 4
    params = [p for p in policy.parameters() if p.requires_grad]
    got_grad = torch.autograd.grad(loss, params, allow_unused=True)
    want_grad = torch.autograd.grad(want, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in got_grad)
    for g, w in zip(got_grad, want_grad):
        if g is None or w is None:
            assert g is None and w is None
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-3)
    # the two objectives differ: normalising changes h unless every response has one token
    other, _ = dpo_step(policy, collate_pairs(rows, tok.pad_token_id), DPOConfig(beta=beta, length_normalize=not norm))
    assert abs(other.item() - loss.item()) > 1e-4


def test_dpo_at_the_reference_is_log2_with_a_tie_and_ipo_is_its_square(tok, tiny_model, pairs):
    rows = pair_rows(tok, pairs[:4])
    attach_reference(tiny_model, rows, tok.pad_token_id)
    batch = collate_pairs(rows, tok.pad_token_id)
    loss, m = dpo_step(tiny_model, batch, DPOConfig(beta=0.1))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5) and m["reward_accuracy"].item() == 0.5
    ipo, _ = dpo_step(tiny_model, batch, DPOConfig(beta=0.1, loss_type="ipo"))
    assert ipo.item() == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-4)


def test_train_dpo_learns_its_pairs_and_leaves_the_reference_alone(tok, tiny_model, pairs):
    """A tiny model trained on labelled notes pairs orders them by its implicit reward (0.5, all
    ties, at the start), and the reference it was measured against stays as it was."""
    model = copy.deepcopy(tiny_model)
    reference = copy.deepcopy(tiny_model)
    before = [p.clone() for p in reference.parameters()]
    res = train_dpo(model, tok, pairs, DPOConfig(steps=30, batch_size=16, lr=3e-3, beta=0.5), reference=reference,
                    progress=False)
    assert abs(res.history[0]["reward_margin"]) < 1e-5            # the first step: the policy is the reference
    rows = pair_rows(tok, pairs)
    attach_reference(reference, rows, tok.pad_token_id)
    _, m = dpo_step(res.model, collate_pairs(rows, tok.pad_token_id), DPOConfig(beta=0.5))
    assert m["reward_accuracy"].item() > 0.8
    assert all(torch.equal(a, b) for a, b in zip(before, reference.parameters()))
    assert res.info["pairs"] == len(pairs) and res.info["flops"] > 0 and res.info["ref_tokens"] > 0


def test_lab_hooks_replace_the_log_probs_and_the_loss_and_check_the_shape(tok, tiny_model, pairs):
    """Lab 04 trains with its own sequence log-probs and loss: given the library's own functions
    the step is the same; a loss without one value per pair is a clear error."""
    policy = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = pair_rows(tok, pairs[:4])
    attach_reference(tiny_model, rows, tok.pad_token_id)
    batch = collate_pairs(rows, tok.pad_token_id)
    cfg = DPOConfig(beta=0.3)
    want, m_want = dpo_step(policy, batch, cfg)
    calls = []

    def logps_fn(logits, ids, mask):
        calls.append(logits.shape)
        return losses.sequence_logps(losses.token_logprobs(logits, ids), mask)

    got, m_got = dpo_step(policy, batch, cfg, logps_fn=logps_fn,
                          loss_fn=lambda pc, pr, rc, rr: losses.dpo_loss(pc, pr, rc, rr, beta=0.3)[0])
    assert calls == [(8, batch["input_ids"].shape[1], tiny_model.config.vocab_size)]
    at_ref = dpo_step(tiny_model, batch, cfg, logps_fn=logps_fn)[1]
    assert at_ref["reward_accuracy"].item() == 0.5              # float noise of two ways to sum: still a tie
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert m_got["reward_margin"].item() == pytest.approx(m_want["reward_margin"].item(), abs=1e-6)
    ipo, _ = dpo_step(policy, batch, cfg, loss_fn=lambda pc, pr, rc, rr: ((pc - rc) - (pr - rr) - 5.0) ** 2)
    assert ipo.item() == pytest.approx(dpo_step(policy, batch, DPOConfig(beta=0.1, loss_type="ipo"))[0].item(),
                                       rel=1e-5)
    with pytest.raises(ValueError, match="one loss per pair"):
        dpo_step(policy, batch, cfg, loss_fn=lambda pc, pr, rc, rr: (pc - pr).mean())


def test_train_dpo_rejects_a_reference_with_another_vocabulary(tok, tiny_model, pairs):
    other = copy.deepcopy(tiny_model)
    other.resize_token_embeddings(tiny_model.config.vocab_size + 8)
    with pytest.raises(ValueError, match="same tokenizer"):
        train_dpo(copy.deepcopy(tiny_model), tok, pairs[:2], DPOConfig(steps=1), reference=other, progress=False)


# --------------------------------------------------------------------------- pairs from samples

def _scored(proxy=True):
    return Scored(prompts=["p0", "p1", "p2"],
                  texts=[["a", "b", "c"], ["d", "d", "e"], ["f", "g", "h"]],
                  gold=[[0.1, 0.9, 0.5], [0.3, 0.3, 0.2], [0.0, 0.4, 0.8]],
                  finished=[[True, True, False], [True, True, True], [False, False, False]],
                  proxy=[[0.2, 1.5, float("-inf")], [0.7, 0.7, 0.1], [float("-inf")] * 3] if proxy else None)


def test_best_of_k_keeps_the_reward_models_best_finished_sample():
    pairs, stats = best_of_k(_scored())
    assert pairs == [("p0", "b"), ("p1", "d")]                  # p2 never finished
    assert stats["gold_kept"] == pytest.approx((0.9 + 0.3) / 2)
    assert stats["gold_all"] == pytest.approx(sum([0.1, 0.9, 0.5, 0.3, 0.3, 0.2, 0.0, 0.4, 0.8]) / 9)
    with pytest.raises(ValueError, match="reward_model=rm"):
        best_of_k(_scored(proxy=False))


def test_ranked_pairs_take_best_against_worst_and_skip_what_cannot_be_a_pair():
    pairs, stats = ranked_pairs(_scored())
    # p0's unfinished "c" is never paired: best "b" against the worst finished "a"; p2 never finished
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b", "a"), ("d", "e")]
    assert stats["gold_agrees"] == 1.0 and stats["pairs"] == 2
    pairs, _ = ranked_pairs(_scored(), min_margin=1.0)
    assert [p["prompt"] for p in pairs] == ["p0"]                   # 1.5 - 0.2 > 1; 0.7 - 0.1 is not


def test_delta_pairs_pair_strong_with_weak_on_the_same_prompts():
    strong = Scored(prompts=["p0", "p1", "p2"], texts=[["x", "y"], ["z", "w"], ["u", "v"]],
                    gold=[[0.5, 0.9], [0.7, 0.1], [0.6, 0.6]], finished=[[False, True], [True, True], [True, True]])
    weak = Scored(prompts=["p0", "p1", "p2"], texts=[["q"], ["z"], ["t"]], gold=[[0.2], [0.7], [0.3]],
                  finished=[[True], [True], [False]])
    pairs, stats = delta_pairs(strong, weak)      # p1: the same text; p2: the weak sample never ended
    assert pairs == [{"prompt": "p0", "chosen": "y", "rejected": "q", "gold_chosen": 0.9, "gold_rejected": 0.2}]
    assert stats["pairs"] == 1 and stats["prompts"] == 3
    with pytest.raises(ValueError, match="different prompts"):
        delta_pairs(strong, Scored(prompts=["p1", "p0"], texts=[["q"], ["z"]], gold=[[0], [0]], finished=[[1], [1]]))


def test_judged_pairs_pool_the_policys_samples_with_other_models_and_keep_the_judges_best():
    """Tülu 3's pairs: candidates are the policy's finished samples and `off_policy` notes of other
    models; with a noiseless judge the chosen one is the best candidate by gold and the rejected
    one worse; the on-policy shares count where each side came from."""
    from minimopd.tasks import gold_score
    task = get_task("notes")
    ex = task.sample(12, seed=2)
    good = [task.solution(e) for e in ex]
    scored = Scored(prompts=[e.prompt for e in ex], texts=[[g + "  ", "Hi."] for g in good],
                    gold=[[1.0, 0.0]] * 12, finished=[[True, True]] * 11 + [[False, False]])
    pairs, stats = judged_pairs(scored, off_policy=3, seed=0, temperature=0.0)
    assert 0 < len(pairs) <= 12 and stats["pairs"] == len(pairs)
    own_good = {e.prompt: g for e, g in zip(ex, good)}
    for p in pairs:
        assert p["gold_chosen"] > p["gold_rejected"] and p["chosen"] != "Hi."
        assert p["gold_chosen"] == gold_score(p["prompt"], p["chosen"])
        if p["prompt"] != ex[-1].prompt:                       # at least as good as the policy's best
            assert p["gold_chosen"] >= gold_score(p["prompt"], own_good[p["prompt"]])
            assert p["chosen_on_policy"] == (p["chosen"] == own_good[p["prompt"]])
        else:                                                   # the policy never finished: all off-policy
            assert not p["chosen_on_policy"] and not p["rejected_on_policy"]
    assert stats["chosen_on_policy"] == pytest.approx(sum(p["chosen_on_policy"] for p in pairs) / len(pairs))
    assert stats["gold_agrees"] == 1.0
    assert judged_pairs(scored, off_policy=3, seed=0, temperature=0.0)[0] == pairs       # deterministic
    # no other models: the policy's two samples are the only candidates, and the judge knows better
    own, _ = judged_pairs(scored, off_policy=0, temperature=0.0)
    assert [(p["chosen"], p["rejected"]) for p in own] == [(g, "Hi.") for g in good[:11]]
    assert all(p["chosen_on_policy"] and p["rejected_on_policy"] for p in own)
    one = Scored(prompts=scored.prompts[:1], texts=[["Hi."]], gold=[[0.0]], finished=[[True]])
    assert judged_pairs(one, off_policy=0)[0] == []                                 # one candidate: no pair
    with pytest.raises(ValueError, match="must be >= 0"):
        judged_pairs(scored, off_policy=-1)


def test_judged_pairs_with_the_verifier_choose_a_right_answer_against_a_wrong_one():
    scored = Scored(prompts=["p0", "p1", "p2"], texts=[["a", "b", "c"], ["d", "e"], ["f", "g"]],
                    gold=[[0.0, 1.0, 1.0], [1.0, 1.0], [0.0, 1.0]],
                    finished=[[True, True, True], [True, True], [True, False]])
    pairs, stats = judged_pairs(scored, judge="verifier", off_policy=0)
    # p0: the first right answer against the wrong one; p1: all right, no pair; p2: "g" never ended
    assert [(p["chosen"], p["rejected"], p["gold_chosen"], p["gold_rejected"]) for p in pairs] == [("b", "a", 1.0, 0.0)]
    assert stats["pairs"] == 1 and stats["chosen_on_policy"] == 1.0 == stats["rejected_on_policy"]
    with pytest.raises(ValueError, match="0 for the verifier judge"):
        judged_pairs(scored, judge="verifier", off_policy=3)
    with pytest.raises(ValueError, match="unknown judge 'gpt'"):
        judged_pairs(scored, judge="gpt")


def test_drift_is_zero_against_itself_and_positive_against_another_model(tok, tiny_model, sft_tiny):
    """A fine-tuned policy's samples are far likelier under itself than under the model it
    started from: the KL estimate on its own samples is large; against itself it is 0."""
    examples = get_task("add").sample(8, seed=0, difficulty="easy")
    same = drift(sft_tiny, sft_tiny, tok, examples, max_new_tokens=8)
    assert same["kl_ref"] == pytest.approx(0.0, abs=1e-5) and 0 < same["length"] <= 8
    assert 0.0 <= same["gold"] <= 1.0 and same["unfinished"] == 0.0
    assert drift(sft_tiny, tiny_model, tok, examples, max_new_tokens=8)["kl_ref"] > 1.0


# --------------------------------------------------------------------------- the recipes

@pytest.mark.parametrize("name", ["llama2", "llama3", "olmo3_delta"])
def test_preference_recipes_build_their_stages_in_order(name, smoke_run):
    from minimopd.recipes import RECIPE_STAGES
    run = smoke_run(name)
    assert [k.rsplit("-", 1)[0] for k in run.keys] == list(RECIPE_STAGES[name])
    assert {r["domain"] for ev in run.result.evals.values() for r in ev.rows} == {"notes"}


def test_llama_recipes_tabulate_rounds_and_dpo_models_on_the_gold_kl_plane(smoke_run):
    l2 = smoke_run("llama2").result
    assert [r["round"] for r in l2.tables["rejection sampling rounds"]] == [1, 2]
    assert l2.info["ppo"]["parent"] == l2.info["rs_round2"]["path"].rsplit("/", 1)[-1]
    l3 = smoke_run("llama3").result
    rows = l3.tables["DPO rounds: pairs, and the model on its own samples"]
    assert [r["round"] for r in rows] == [1, 2] and all(r["KL to reference"] >= -0.05 for r in rows)
    assert l3.info["dpo_round2"]["parent"] == l3.info["rs_round2"]["path"].rsplit("/", 1)[-1]
    olmo = smoke_run("olmo3_delta").result
    rows = olmo.tables["delta pairs vs reward-ranked pairs"]
    assert [r["stage"] for r in rows] == ["dpo_delta", "dpo_ranked"] and all(r["pairs"] > 0 for r in rows)
    sft = olmo.info["sft"]["path"].rsplit("/", 1)[-1]
    assert olmo.info["dpo_delta"]["parent"] == sft == olmo.info["dpo_ranked"]["parent"]
    # `place` reads an artifact or a recipe's model alike: the table's row is the model's
    from minimopd import get_profile
    from minimopd.recipes_llama import place
    from minimopd.recipes_pref import demonstrations_artifact
    reference = demonstrations_artifact(get_profile("smoke"), seed=0, progress=False)
    row = place(olmo.models["dpo_ranked"], reference, get_profile("smoke"), 0)
    assert row == {k: rows[1][k] for k in row}


def test_gold_kl_figure_places_models_by_gain_over_the_baseline_and_ppo_by_gain_over_its_start():
    from minimopd.plots import gold_kl_figure
    from minimopd.recipes_pref import windows
    baseline = {"gold (T=1)": 0.6, "KL to reference": 0.0, "length": 60.0}
    models = {"dpo": {"gold (T=1)": 0.7, "KL to reference": 0.006, "length": 61.0},
              "ppo": {"gold (T=1)": 0.55, "KL to reference": 0.17, "length": 50.0}}
    hist = [{"step": i, "reward": 0.1 * i, "accuracy": 0.68 + 0.01 * i, "kl_ref": 0.01 * i} for i in range(30)]
    fig = gold_kl_figure(models, baseline, {"ppo path": hist})
    path, dpo, ppo = fig.data
    w = windows(hist, points=15)
    assert path.name == "ppo path" and list(path.x) == [r["kl_ref"] for r in w]
    assert list(path.y) == pytest.approx([r["accuracy"] - w[0]["accuracy"] for r in w]) and path.y[0] == 0
    assert (dpo.x[0], dpo.y[0]) == pytest.approx((0.006, 0.1)) and (ppo.x[0], ppo.y[0]) == pytest.approx((0.17, -0.05))
    assert dpo.customdata[0][0] == 0.7 and len(gold_kl_figure(models, baseline).data) == 2


def test_dpo_vs_ppo_draws_on_policy_delta_pairs_against_a_weaker_sibling(capsys):
    """`experiments/dpo_vs_ppo.py --pairs delta_onpolicy --weak-fraction F`: the chosen side is the
    notes SFT model's own sample, the rejected its weak sibling's (the SFT run stopped at F)."""
    from scripts import load_script
    mod = load_script("experiments/dpo_vs_ppo.py")
    mod.main(["--profile", "smoke", "--pairs", "delta_onpolicy", "--betas", "0.1", "--ppo-betas",
              "--weak-fraction", "0.3"])
    out = capsys.readouterr().out
    assert "delta_onpolicy pairs: {'prompts': 32" in out and "| dpo (delta_onpolicy) |" in out
    from minimopd.recipes_llama import weak_sibling_artifact
    with pytest.raises(ValueError, match="fraction must be in"):
        weak_sibling_artifact("smoke", 0, fraction=1.0)
