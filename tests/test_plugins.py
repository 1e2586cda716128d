"""The online loop's plug-ins against independent references: one loop step against a
hand-written GRPO step, the first-minibatch ratio, self-distillation in all three modes, routed
teachers, GAE / value loss / PPO, the value head and reward model, and the bad inputs."""
import copy
import dataclasses

import pytest
import torch

from minimopd import losses
from minimopd.advantages import get_estimator
from minimopd.experience import Experience
from minimopd.models import (PolicyWithValue, RewardModel, ScalarHead, build_model, last_hidden_state,
                             load_model, position_ids_from_mask, save_model, sequence_logprobs)
from minimopd.objectives import (ClippedPolicyGradient, JSDObjective, PPOObjective, ReverseKLObjective,
                                 TruncatedISPolicyGradient)
from minimopd.rollout import generate
from minimopd.signals import (RewardModelSignal, RoutedTeacherSignal, SignalOutput, TeacherSignal,
                              VerifierSignal)
from minimopd.stages.common import OptimConfig, lr_at
from minimopd.stages.online import (BudgetConfig, OnlineConfig, SamplingConfig, preset,
                                    sample_examples, train_online)
from minimopd.tasks import Example, get_task

BY_LENGTH = VerifierSignal(lambda ex, text: float(len(text)))   # varies inside every group


def small_cfg(**kw):
    base = dict(steps=1, prompts_per_step=4, group_size=4, max_new_tokens=6, domains=("add",),
                difficulty="easy", lr=1e-2, seed=3)
    return OnlineConfig(**{**base, **kw})


class Spy:
    """Wraps an objective and records every call's stats and minibatch."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.needs_values = getattr(inner, "needs_values", False)

    def __call__(self, logits, logprobs, values, mb):
        loss, stats = self.inner(logits, logprobs, values, mb)
        self.calls.append({"stats": stats, "mb": mb, "loss": loss.detach(), "logits": logits.detach()})
        return loss, stats


# ------------------------------------------------------------------------------- the loop itself

def test_one_step_equals_a_hand_written_grpo_step(tok, sft_tiny):
    cfg = small_cfg()
    model = copy.deepcopy(sft_tiny)
    train_online(model, tok, cfg, signal=BY_LENGTH, progress=False)

    ref = copy.deepcopy(sft_tiny)
    examples = sample_examples(cfg, 0)
    ro = generate(ref, tok, [e.prompt for e in examples], num_samples=4, max_new_tokens=6,
                  seed=cfg.seed * 1_000_003)
    rewards = torch.tensor([float(len(t)) for t in ro.texts])
    adv = losses.group_advantages(rewards, 4)
    # The loop visits the rows of its one minibatch in a seeded random order (step 0, epoch 0);
    # the same order here makes the float sums identical too.
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    ids, attn, mask, adv = ro.input_ids[order], ro.attention_mask[order], ro.completion_mask[order], adv[order]
    ref.train()
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
    logits = ref(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    lp = losses.token_logprobs(logits, ids)
    loss, _ = losses.grpo_loss(lp, lp.detach(), adv, mask, aggregation="grpo", max_tokens=6)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
    opt.step()

    moved = max((p - q).abs().max().item() for p, q in zip(ref.parameters(), sft_tiny.parameters()))
    assert moved > 1e-3   # a real update, so the comparison below means something
    # The loop computes the forward pass its own way (each prompt once for its samples), so the
    # gradients agree to float precision; the clipped gradient each parameter received is still
    # in .grad. Adam's first step is about lr * g / |g| per element, which turns float noise
    # into visible differences only where |g| is near Adam's eps (1e-8): the weights are compared
    # to 1e-6 wherever the gradient is larger than 1e-6.
    compared = total = 0
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
        clear = q.grad.abs() > 1e-6
        torch.testing.assert_close(p[clear], q[clear], atol=1e-6, rtol=0, msg=name)
        compared, total = compared + int(clear.sum()), total + clear.numel()
    assert compared > 0.5 * total


def test_first_minibatch_is_exactly_on_policy_later_ones_are_not(tok, sft_tiny):
    cfg = small_cfg(epochs=2, minibatches=2)
    spy = Spy(ClippedPolicyGradient(cfg))
    train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=BY_LENGTH, objective=spy, progress=False)
    assert len(spy.calls) == 4
    first = spy.calls[0]["stats"]
    assert first["ratio_mean"] == 1.0 and first["clip_frac"] == 0.0
    assert any(abs(c["stats"]["ratio_mean"] - 1.0) > 1e-4 for c in spy.calls[1:])


def test_learning_rate_schedule_is_honoured(tok, sft_tiny):
    cfg = small_cfg(steps=4, lr=1e-3, warmup_steps=2, min_lr_ratio=0.1, prompts_per_step=2, group_size=2)
    res = train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=BY_LENGTH, progress=False)
    optim = OptimConfig(lr=1e-3, warmup_steps=2, min_lr_ratio=0.1)
    assert [r["lr"] for r in res.history] == [lr_at(s, 4, optim) for s in range(4)]
    assert res.history[0]["lr"] < res.history[1]["lr"] > res.history[3]["lr"]


def test_online_config_parts_flat_access_and_replace():
    cfg = OnlineConfig(steps=7, group_size=3, lr=1e-4, seed=2)
    assert cfg.group_size == cfg.sampling.group_size == 3 and cfg.steps == cfg.budget.steps == 7
    assert cfg.lr == cfg.objective.lr and cfg.seed == 2
    other = dataclasses.replace(cfg, lr=5e-5, steps=9)
    assert (other.lr, other.steps, other.group_size, cfg.lr) == (5e-5, 9, 3, 1e-4)
    parts = OnlineConfig(sampling=SamplingConfig(group_size=5), budget=BudgetConfig(steps=2), lr=0.1)
    assert (parts.group_size, parts.steps, parts.lr) == (5, 2, 0.1)
    assert preset("dapo", cfg).eps_high == 0.28 and preset("dapo", cfg).dynamic_sampling
    with pytest.raises(TypeError, match="no setting 'group'"):
        OnlineConfig(group=3)
    with pytest.raises(AttributeError, match="no setting 'nope'"):
        cfg.nope


# ------------------------------------------------------------------------------ distillation

@pytest.mark.parametrize("mode", ["sampled", "topk", "full"])
def test_self_distillation_gives_zero_signal(tok, sft_tiny, mode):
    cfg = preset(f"opd_{mode}", small_cfg(group_size=2, max_new_tokens=8))
    teacher = TeacherSignal(copy.deepcopy(sft_tiny), mode=mode, k=4)
    spy = Spy(ReverseKLObjective(cfg) if mode != "sampled" else ClippedPolicyGradient(cfg))
    res = train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=teacher, objective=spy, progress=False)
    call = spy.calls[0]
    mb = call["mb"]
    if mode == "sampled":
        assert mb.advantages.shape == mb.mask.shape
        assert (mb.advantages * mb.mask).abs().max() < 1e-5
    else:
        assert call["stats"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert abs(call["loss"].item()) < 1e-5
    assert res.history[0]["signal_tokens"] > 0


def test_distillation_from_another_model_lowers_the_kl_on_a_batch(tok, sft_tiny):
    cfg = preset("opd_full", small_cfg(group_size=2, max_new_tokens=8, epochs=4, lr=3e-3))
    teacher = TeacherSignal(build_model("tiny", tok, seed=7), mode="full")
    spy = Spy(ReverseKLObjective(cfg))
    train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=teacher, objective=spy, progress=False)
    kls = [c["stats"]["kl"] for c in spy.calls]
    assert kls[0] > 0.1 and kls[-1] < kls[0] * 0.9, kls


def test_a_setting_only_one_objective_reads_keys_only_its_stages():
    """`OnlineConfig.cache_dict`: jsd_beta changes the key of a jsd stage, not of a GRPO one (so
    adding the setting kept every cached stage)."""
    from minimopd.cache import stage_key
    grpo, jsd = preset("grpo", small_cfg()), preset("opd_jsd", small_cfg())
    assert stage_key("s", config=grpo) == stage_key("s", config=dataclasses.replace(grpo, jsd_beta=0.1))
    assert stage_key("s", config=jsd) != stage_key("s", config=dataclasses.replace(jsd, jsd_beta=0.1))
    assert stage_key("s", config=grpo) != stage_key("s", config=dataclasses.replace(grpo, lr=0.1))


@pytest.mark.parametrize("algo, beta", [("opd_forward", 0.0), ("opd_jsd", 0.5)])
def test_jsd_objective_is_the_masked_mean_divergence_and_zero_on_itself(tok, sft_tiny, algo, beta):
    """opd_forward / opd_jsd: the loss is the token-mean of generalized_jsd over completion
    tokens (a loop over the mask as reference), 0 when the teacher is the student, and it
    needs the teacher's whole distribution."""
    cfg = preset(algo, small_cfg(group_size=2, max_new_tokens=8, steps=1))
    assert cfg.jsd_beta == beta
    teacher_model = build_model("tiny", tok, seed=7)
    spy = Spy(JSDObjective(cfg))
    train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=TeacherSignal(teacher_model, mode="full"), objective=spy,
                 progress=False)
    call = spy.calls[0]
    mb, logits = call["mb"], call["logits"]
    full = mb.signal.full_logprobs
    total, count = 0.0, 0
    for b in range(mb.mask.shape[0]):
        for t in range(1, mb.mask.shape[1]):
            if mb.mask[b, t]:
                p = torch.softmax(logits[b, t - 1].detach().float(), -1)
                q = full[b, t].exp()
                if beta == 0.0:   # the endpoint is the forward KL itself (the mixture formula gives 0)
                    total += float((q * (q.log() - p.log())).sum())
                else:
                    m = (1 - beta) * p + beta * q
                    total += float(beta * (q * (q.log() - m.log())).sum() + (1 - beta) * (p * (p.log() - m.log())).sum())
                count += 1
    assert call["loss"].item() == pytest.approx(total / count, rel=1e-4)
    assert call["loss"].item() > 1e-3
    self_spy = Spy(JSDObjective(cfg))
    train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=TeacherSignal(copy.deepcopy(sft_tiny), mode="full"),
                 objective=self_spy, progress=False)
    assert abs(self_spy.calls[0]["loss"].item()) < 1e-5
    with pytest.raises(ValueError, match="mode='full'"):
        train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=TeacherSignal(teacher_model, mode="sampled"),
                     progress=False)


def test_mimo_mopd_drops_tokens_whose_ratio_left_the_window(tok, sft_tiny):
    """mopd_mimo: teacher-token advantages in the truncated-IS policy gradient. With several
    minibatch steps per rollout batch at a large learning rate the ratios drift and tokens are
    dropped (their share is logged); the first minibatch has ratio 1 and drops none."""
    cfg = preset("mopd_mimo", small_cfg(group_size=2, max_new_tokens=8, epochs=3, minibatches=2, lr=3e-2,
                                        eps_low=0.05, eps_high=0.05))
    teacher = TeacherSignal(build_model("tiny", tok, seed=7), mode="sampled")
    spy = Spy(TruncatedISPolicyGradient(cfg))
    before = [p.detach().clone() for p in sft_tiny.parameters()]
    student = copy.deepcopy(sft_tiny)
    res = train_online(student, tok, cfg, signal=teacher, objective=spy, progress=False)
    assert all(h["teacher_kl"] == h["teacher_kl"] for h in res.history)     # logged (not nan) for every mode
    drops = [c["stats"]["dropped_frac"] for c in spy.calls]
    assert drops[0] == 0.0 and max(drops) > 0, drops
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_routed_teachers_score_each_row_with_its_own_teacher(tok, sft_tiny):
    teachers = {"add": build_model("tiny", tok, seed=1), "sort": build_model("tiny", tok, seed=2)}
    examples = get_task("add").sample(2, seed=0) + get_task("sort").sample(2, seed=0)
    examples.append(Example("What is 1+1?", "2", "add", "easy", {"teacher_id": "sort"}))
    ro = generate(sft_tiny, tok, [e.prompt for e in examples], num_samples=2, max_new_tokens=5, seed=0)
    rows = [e for e in examples for _ in range(2)]
    routed = RoutedTeacherSignal({name: TeacherSignal(m, mode="full") for name, m in teachers.items()})
    out = routed(ro, rows)
    assert out.teacher_ids == ["add"] * 4 + ["sort"] * 6
    for i, name in enumerate(out.teacher_ids):   # teachers score the completions (0 on prompts)
        want = sequence_logprobs(teachers[name], ro.input_ids[i:i + 1], ro.attention_mask[i:i + 1])[0]
        m = ro.completion_mask[i].bool()
        torch.testing.assert_close(out.teacher_logprobs[i][m], want[m], atol=1e-5, rtol=0)
        assert (out.teacher_logprobs[i][:ro.prompt_length] == 0).all()
        assert torch.allclose(out.full_logprobs[i][m].logsumexp(-1), torch.zeros(int(m.sum())), atol=1e-5)
    m = ro.completion_mask[0].bool()
    other = sequence_logprobs(teachers["sort"], ro.input_ids[:1], ro.attention_mask[:1])[0]
    assert not torch.allclose(out.teacher_logprobs[0][m], other[m])
    n_params = sum(p.numel() for p in teachers["add"].parameters())
    assert out.flops == pytest.approx(2.0 * n_params * int(ro.attention_mask.sum()), rel=1e-6)
    assert out.metrics["rows/add"] == 4 and out.metrics["rows/sort"] == 6
    with pytest.raises(KeyError, match="no teacher for domain 'sort' .* the teachers are add"):
        RoutedTeacherSignal({"add": TeacherSignal(teachers["add"])}).routes(rows)


def test_routed_teacher_weights_scale_each_rows_teacher_term(tok, sft_tiny):
    """Per-domain weights: a row's teacher term (the sampled-token advantage, the exact KL, the
    JSD) is multiplied by its teacher's weight; weight 0 leaves that row's tokens without
    gradient. The domains are interleaved, so a scatter in group order would be caught."""
    teachers = {"add": build_model("tiny", tok, seed=1), "sort": build_model("tiny", tok, seed=2)}
    a, b = get_task("add").sample(2, seed=0), get_task("sort").sample(2, seed=0)
    examples = [a[0], b[0], a[1], b[1]]
    ro = generate(sft_tiny, tok, [e.prompt for e in examples], num_samples=2, max_new_tokens=5, seed=0)
    rows = [e for e in examples for _ in range(2)]
    plain = RoutedTeacherSignal({n: TeacherSignal(m, mode="full") for n, m in teachers.items()})
    routed = RoutedTeacherSignal({n: TeacherSignal(m, mode="full") for n, m in teachers.items()},
                                 weights={"add": 0.0, "sort": 3.0})
    out, ref = routed(ro, rows), plain(ro, rows)
    assert out.teacher_ids == ["add", "add", "sort", "sort"] * 2
    assert ref.row_weights is None and out.row_weights.tolist() == [0.0, 0.0, 3.0, 3.0] * 2
    torch.testing.assert_close(out.full_logprobs, ref.full_logprobs)
    for i, name in enumerate(out.teacher_ids):     # each row scored by its own teacher, wherever it sits
        want = sequence_logprobs(teachers[name], ro.input_ids[i:i + 1], ro.attention_mask[i:i + 1])[0]
        m = ro.completion_mask[i].bool()
        torch.testing.assert_close(out.teacher_logprobs[i][m], want[m], atol=1e-5, rtol=0)
    mask = ro.completion_mask.float()
    exp = Experience(input_ids=ro.input_ids, attention_mask=ro.attention_mask, mask=mask, logprobs=ro.logprobs,
                     examples=rows, rewards=out.rewards, scores=out.scores, signal=out,
                     finished=torch.ones(8, dtype=torch.bool), group_size=2, prompt_length=ro.prompt_length)
    adv, _ = get_estimator("teacher_token")(exp, small_cfg())
    base = losses.opd_advantages(ro.logprobs, out.teacher_logprobs, mask)
    torch.testing.assert_close(adv, base * out.row_weights[:, None])
    is_add = torch.tensor([n == "add" for n in out.teacher_ids])
    for name, objective, divergence in (
            ("opd_full", ReverseKLObjective, lambda lg, cfg: losses.token_reverse_kl(
                lg, mode="full", teacher_full_logprobs=out.full_logprobs)),
            ("opd_jsd", JSDObjective, lambda lg, cfg: losses.generalized_jsd(
                lg, beta=cfg.jsd_beta, teacher_full_logprobs=out.full_logprobs))):
        logits = torch.randn(8, ro.input_ids.shape[1], len(tok), requires_grad=True)
        cfg = preset(name, small_cfg())
        loss, _ = objective(cfg)(logits, None, None, exp)
        want = losses.aggregate(divergence(logits, cfg) * out.row_weights[:, None], mask, cfg.aggregation,
                                cfg.max_new_tokens)
        torch.testing.assert_close(loss, want)
        loss.backward()
        assert logits.grad[is_add].abs().max() == 0 and logits.grad[~is_add].abs().max() > 0, name
    assert routed.spec() != plain.spec()
    assert RoutedTeacherSignal(plain.teachers, weights={"add": 1.0}).spec() == plain.spec()   # 1 is the default
    with pytest.raises(ValueError, match=r"weights name \['count'\], which have no teacher; the teachers are add, sort"):
        RoutedTeacherSignal(plain.teachers, weights={"count": 2.0})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        RoutedTeacherSignal(plain.teachers, weights={"add": -1.0})


def test_routed_teachers_take_a_router_and_check_what_it_returns(tok, sft_tiny):
    teachers = {n: TeacherSignal(build_model("tiny", tok, seed=i), mode="sampled") for i, n in enumerate(("add", "sort"))}
    rows = [e for e in get_task("add").sample(2, seed=0) + get_task("sort").sample(1, seed=0) for _ in range(2)]
    calls = []

    def by_hand(names, have):
        calls.append(list(names))
        return {n: [i for i, m in enumerate(names) if m == n] for n in have if n in names}

    routed = RoutedTeacherSignal(teachers, router=by_hand)
    assert routed.routes(rows) == {"add": [0, 1, 2, 3], "sort": [4, 5]} and calls
    assert routed.spec() == RoutedTeacherSignal(teachers).spec()      # a router cannot change the grouping
    bad = {"everything to add": (lambda names, have: {"add": list(range(len(names)))}, "row 4: it belongs to 'sort'"),
           "a row twice": (lambda names, have: {"add": [0, 1, 2, 3, 3], "sort": [4, 5]}, "row 3: it was routed twice"),
           "a row left out": (lambda names, have: {"add": [0, 1, 2, 3], "sort": [4]}, r"left rows \[5\] without"),
           "a row that is not there": (lambda names, have: {"add": [0, 1, 2, 3], "sort": [4, 5, 6]},
                                       "row 6: it is not a row of this batch")}
    for why, (router, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            RoutedTeacherSignal(teachers, router=router).routes(rows)
    forgets_to_raise = RoutedTeacherSignal({"add": teachers["add"]}, router=by_hand)   # drops the sort rows silently
    with pytest.raises(KeyError, match="no teacher for domain 'sort' .* the teachers are add"):
        forgets_to_raise.routes(rows)


def test_topk_teacher_uses_the_student_support_recorded_by_the_sampler(tok, sft_tiny):
    teacher = TeacherSignal(build_model("tiny", tok, seed=4), mode="topk", k=3)
    assert teacher.rollout_topk == 3
    examples = get_task("add").sample(2, seed=1)
    ro = generate(sft_tiny, tok, [e.prompt for e in examples], num_samples=2, max_new_tokens=5, seed=0, topk=3)
    out = teacher(ro, [e for e in examples for _ in range(2)])
    assert torch.equal(out.support_ids, ro.topk_ids.long())
    full = losses.token_log_softmax(teacher.teacher(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                                                    position_ids=position_ids_from_mask(ro.attention_mask)).logits)
    m = ro.completion_mask.bool()
    torch.testing.assert_close(out.support_logprobs[m], full.gather(-1, ro.topk_ids.long())[m], atol=1e-5, rtol=0)
    plain = generate(sft_tiny, tok, [e.prompt for e in examples], num_samples=2, max_new_tokens=5, seed=0)
    with pytest.raises(ValueError, match="generate\\(..., topk=3\\)"):
        teacher(plain, [e for e in examples for _ in range(2)])


def test_teacher_bad_inputs(tok, sft_tiny):
    from minimopd.tokenizer import build_tokenizer
    with pytest.raises(ValueError, match="unknown teacher mode 'topp'"):
        TeacherSignal(sft_tiny, mode="topp")
    other_vocab = build_model("tiny", tok, seed=0, vocab_size=len(tok) + 5)
    other_vocab.config.minimopd_tokenizer = None
    with pytest.raises(ValueError, match="must share one tokenizer"):
        TeacherSignal(other_vocab).setup(sft_tiny, tok, "cpu")
    with pytest.raises(ValueError, match="teacher is torch.float64 and the student torch.float32"):
        TeacherSignal(copy.deepcopy(sft_tiny).double()).setup(sft_tiny, build_tokenizer(), "cpu")
    with pytest.raises(ValueError, match="teacher's context is 256"):
        TeacherSignal(sft_tiny).check_length(300)
    with pytest.raises(ValueError, match="needs a teacher signal"):
        train_online(copy.deepcopy(sft_tiny), tok, preset("opd_sampled", small_cfg()), progress=False)
    with pytest.raises(ValueError, match=r"outcome_weight=0.5 .* group_size must be >= 2 \(got 1\)"):
        train_online(copy.deepcopy(sft_tiny), tok, preset("mopd_mimo", small_cfg(group_size=1, outcome_weight=0.5)),
                     signal=TeacherSignal(sft_tiny), progress=False)
    with pytest.raises(ValueError, match="needs the teacher's distribution"):
        train_online(copy.deepcopy(sft_tiny), tok, preset("opd_full", small_cfg()),
                     signal=TeacherSignal(sft_tiny, mode="sampled"), progress=False)


def test_signal_specs_tell_runs_apart(tok, sft_tiny):
    a, b = build_model("tiny", tok, seed=1), build_model("tiny", tok, seed=2)
    specs = [VerifierSignal().spec(), TeacherSignal(a).spec(), TeacherSignal(b).spec(),
             TeacherSignal(a, mode="full").spec(), TeacherSignal(a, key="teacher-art").spec(),
             RoutedTeacherSignal({"add": TeacherSignal(a)}).spec()]
    assert len({repr(s) for s in specs}) == len(specs)
    from minimopd.cache import stage_key
    cfg = small_cfg()
    keys = {stage_key("rl", config=cfg, signal=s) for s in specs}
    assert len(keys) == len(specs)


# ----------------------------------------------------------------------------- PPO pieces

def _ppo_experience(seed=0, B=3, T=7):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    for b, (s, e) in enumerate([(2, 7), (3, 5), (2, 3)]):
        mask[b, s:e] = 1
    lp, ref = -torch.rand(B, T, generator=g), -torch.rand(B, T, generator=g)
    values = torch.randn(B, T, generator=g)
    scores = torch.tensor([1.0, -0.5, 2.0])
    exp = Experience(input_ids=torch.zeros(B, T, dtype=torch.long), attention_mask=torch.ones(B, T, dtype=torch.long),
                     mask=mask, logprobs=lp, examples=[None] * B, rewards=scores, scores=scores,
                     signal=SignalOutput(scores, scores), finished=torch.ones(B, dtype=torch.bool), group_size=1,
                     prompt_length=2, ref_logprobs=ref, old_values=values)
    return exp


def test_gae_estimator_matches_a_loop_reference():
    exp = _ppo_experience()
    cfg = OnlineConfig(kl_beta=0.1, kl_kind="k1", gamma=0.9, lam=0.8, whiten_advantages=False)
    adv, ret = get_estimator("gae")(exp, cfg)
    B, T = exp.mask.shape
    for b in range(B):
        cols = [t for t in range(T) if exp.mask[b, t]]
        rewards = [-0.1 * (exp.logprobs[b, t] - exp.ref_logprobs[b, t]).item() for t in cols]
        rewards[-1] += exp.rewards[b].item()
        running, want = 0.0, {}
        for i in reversed(range(len(cols))):
            nxt = exp.old_values[b, cols[i + 1]].item() if i + 1 < len(cols) else 0.0
            delta = rewards[i] + 0.9 * nxt - exp.old_values[b, cols[i]].item()
            running = delta + 0.9 * 0.8 * running
            want[cols[i]] = running
        for t in range(T):
            assert adv[b, t].item() == pytest.approx(want.get(t, 0.0), abs=1e-5)
            expect_ret = want[t] + exp.old_values[b, t].item() if t in want else 0.0
            assert ret[b, t].item() == pytest.approx(expect_ret, abs=1e-5)
    whitened, _ = get_estimator("gae")(exp, dataclasses.replace(cfg, whiten_advantages=True))
    assert losses.masked_mean(whitened, exp.mask).item() == pytest.approx(0.0, abs=1e-5)


def test_value_loss_matches_a_loop_reference_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    old, ret = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    got = losses.value_loss(v, old, ret, clip=0.3)
    ref = torch.stack([torch.stack([0.5 * torch.maximum((v[i, j] - ret[i, j]) ** 2,
                                                        (old[i, j] + (v[i, j] - old[i, j]).clamp(-0.3, 0.3) - ret[i, j]) ** 2)
                                    for j in range(5)]) for i in range(4)])
    torch.testing.assert_close(got, ref)
    (gv,) = torch.autograd.grad(got.sum(), v)
    (rv,) = torch.autograd.grad(ref.sum(), v)
    torch.testing.assert_close(gv, rv)
    assert torch.autograd.gradcheck(lambda x: losses.value_loss(x, old, ret, clip=0.3), (v,))


def test_ppo_objective_is_clipped_pg_plus_weighted_value_loss():
    exp = _ppo_experience(seed=1)
    cfg = OnlineConfig(vf_coef=0.25, vf_clip=0.2, eps_low=0.2, aggregation="dapo", max_new_tokens=6)
    exp.advantages, exp.returns = get_estimator("gae")(exp, cfg)
    lp = (exp.logprobs + 0.3 * torch.randn(exp.logprobs.shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    values = (exp.old_values + 0.5).requires_grad_()
    loss, stats = PPOObjective(cfg)(None, lp, values, exp)
    pg, _ = losses.ppo_clip_loss(lp, exp.logprobs, exp.advantages, 0.2)
    vl = losses.value_loss(values, exp.old_values, exp.returns, clip=0.2)
    want = losses.masked_mean(pg, exp.mask) + 0.25 * losses.masked_mean(vl, exp.mask)
    torch.testing.assert_close(loss, want)
    assert stats["value_loss"] == pytest.approx(losses.masked_mean(vl, exp.mask).item())
    loss.backward()
    assert values.grad.abs().sum() > 0 and lp.grad.abs().sum() > 0


def test_policy_with_value_round_trips_and_aligns_values(tmp_path, tok, sft_tiny):
    model = PolicyWithValue(copy.deepcopy(sft_tiny))
    with torch.no_grad():
        model.head.proj.weight.normal_()
        model.head.proj.bias.fill_(0.3)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    attn = torch.ones_like(ids)
    logits, values = model(ids, attn)
    hidden = last_hidden_state(model.lm, ids, attn)
    assert values[0, 0] == 0 and torch.allclose(values[0, 1:], model.head(hidden)[0, :-1])
    torch.testing.assert_close(logits, sft_tiny(input_ids=ids, attention_mask=attn).logits)
    save_model(model, tok, tmp_path / "pv")
    loaded, _ = load_model(tmp_path / "pv")
    assert isinstance(loaded, PolicyWithValue)
    l2, v2 = loaded(ids, attn)
    torch.testing.assert_close(v2, values)
    torch.testing.assert_close(l2, logits)
    with pytest.raises(ValueError, match="reads 32-dim hidden states but the model has hidden_size=64"):
        PolicyWithValue(sft_tiny, ScalarHead(32))


def test_reward_model_scores_the_last_real_token_with_either_padding(tmp_path, tok):
    rm = RewardModel(build_model("tiny", tok, seed=5))
    with torch.no_grad():
        rm.head.proj.weight.normal_(generator=torch.Generator().manual_seed(0))
    seq = [1, 50, 51, 52, 4]
    right = torch.tensor([seq + [0, 0]])
    left = torch.tensor([[0, 0] + seq])
    r_right = rm(right, (right != 0).long())
    r_left = rm(left, (left != 0).long())
    torch.testing.assert_close(r_right, r_left, atol=1e-5, rtol=0)
    alone = rm.head(last_hidden_state(rm.lm, torch.tensor([seq]), torch.ones(1, 5, dtype=torch.long))[:, -1])
    torch.testing.assert_close(r_right, alone, atol=1e-5, rtol=0)
    rm.set_normalisation(0.5, 2.0)
    save_model(rm, tok, tmp_path / "rm")
    loaded, _ = load_model(tmp_path / "rm")
    assert isinstance(loaded, RewardModel)
    torch.testing.assert_close(loaded(right, (right != 0).long()), (r_right - 0.5) / 2.0, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="needs a minimopd.models.RewardModel"):
        RewardModelSignal(rm.lm)


def test_ppo_runs_end_to_end_with_a_reward_model(tok, sft_tiny):
    rm = RewardModel(build_model("tiny", tok, seed=5))
    with torch.no_grad():
        rm.head.proj.weight.normal_(generator=torch.Generator().manual_seed(1))
    policy = PolicyWithValue(copy.deepcopy(sft_tiny))
    cfg = preset("ppo", small_cfg(steps=2, group_size=2, kl_beta=0.05, epochs=2, lr=3e-3))
    res = train_online(policy, tok, cfg, signal=RewardModelSignal(rm), ref_model=copy.deepcopy(sft_tiny),
                       progress=False)
    last = res.history[-1]
    assert {"value_loss", "pg_loss", "kl_ref", "value_mean"} <= set(last)
    assert res.history[0]["signal_tokens"] > 0 and res.history[0]["reward"] != 0
    assert policy.head.proj.weight.abs().sum() > 0        # the value head learned from zero
    assert any(not torch.equal(p, q) for p, q in zip(policy.lm.parameters(), sft_tiny.parameters()))
    with pytest.raises(ValueError, match="wrap the policy as minimopd.models.PolicyWithValue"):
        train_online(copy.deepcopy(sft_tiny), tok, cfg, signal=RewardModelSignal(rm), ref_model=sft_tiny,
                     progress=False)
