"""The scale path (minimopd.scale): trl trainers built from minimopd pieces, launched on N processes.

Equivalence: on identical tensors the routed trainer's loss (value and gradient) equals minimopd's
own `reverse_kl` objective (mode "full") and the `teacher_token` estimator with the clipped policy
gradient (mode "sampled"); each row is scored by its domain's teacher. End to end: a smoke run on
2 CPU processes (gloo) follows the 1-process run's loss curve step by step, changes the weights,
and its checkpoint loads and evaluates with minimopd's own functions."""
import copy
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")

from minimopd import generate, get_task  # noqa: E402
from minimopd.advantages import mopd_advantages  # noqa: E402
from minimopd.losses import token_logprobs  # noqa: E402
from minimopd.models import build_model, forward_logits, load_model, sequence_logprobs  # noqa: E402
from minimopd.objectives import ClippedPolicyGradient, ReverseKLObjective  # noqa: E402
from minimopd.scale import data as scale_data  # noqa: E402
from minimopd.scale.launch import build_trainer, evaluate_run, launch, prepare  # noqa: E402
from minimopd.scale.routed import RoutedDistillationTrainer, teacher_tensors  # noqa: E402
from minimopd.scale.trainers import distillation_args, grpo_args, routed_trainer, rows_per_process  # noqa: E402
from minimopd.signals import RoutedTeacherSignal, TeacherSignal  # noqa: E402
from minimopd.stages.online_config import OnlineConfig, preset  # noqa: E402

DOMAINS = ("add", "count")


@pytest.fixture(scope="module")
def teachers(tok):
    """Two teachers that disagree with each other and with the student (other seeds)."""
    return {d: build_model("tiny", tok, seed=10 + i).eval() for i, d in enumerate(DOMAINS)}


@pytest.fixture(scope="module")
def batch(tok, sft_tiny):
    """A minimopd rollout of the student on prompts of both domains, and the same batch as trl
    hands its loss (left-padded prompt ids, right-padded completion ids, a teacher_id per row)."""
    examples = [ex for d in DOMAINS for ex in get_task(d).sample(3, seed=1, difficulty="easy")]
    ro = generate(sft_tiny, tok, [e.prompt for e in examples], num_samples=2, max_new_tokens=8, seed=0)
    rows = [ex for ex in examples for _ in range(2)]
    P = ro.prompt_length
    inputs = {"prompt_ids": ro.input_ids[:, :P], "prompt_mask": ro.attention_mask[:, :P],
              "completion_ids": ro.input_ids[:, P:], "completion_mask": ro.attention_mask[:, P:],
              "teacher_id": [ex.domain for ex in rows]}
    return ro, rows, inputs


def _trainer(student, teachers, tok, tmp_path, **kw):
    data = scale_data.task_dataset(2, domains=DOMAINS)
    cfg = OnlineConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=8)
    args = distillation_args(cfg, output_dir=str(tmp_path))
    return RoutedDistillationTrainer(student, teachers, args=args, train_dataset=data, processing_class=tok, **kw)


def _grads(loss, model):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, [p for p in model.parameters()])])


@pytest.mark.parametrize("weights", [None, {"add": 0.25}])
def test_routed_full_reverse_kl_equals_minimopd_objective(tok, sft_tiny, teachers, batch, tmp_path, weights):
    ro, rows, inputs = batch
    student = copy.deepcopy(sft_tiny)
    cfg = preset("opd_full", OnlineConfig(max_new_tokens=8))
    signal = RoutedTeacherSignal({d: TeacherSignal(t, mode="full") for d, t in teachers.items()}, weights=weights)
    out = signal(ro, rows)
    ref, _ = ReverseKLObjective(cfg)(forward_logits(student, ro.input_ids, ro.attention_mask), None, None,
                                     SimpleNamespace(signal=out, mask=ro.completion_mask))
    trainer = _trainer(student, teachers, tok, tmp_path, mode="full", weights=weights)
    loss, entropy_sum, n_valid = trainer._compute_loss(student, inputs, None)
    assert int(n_valid) == int(ro.completion_mask.sum())
    assert float(ref.detach()) > 0.01
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grads(loss, student), _grads(ref, student), rtol=1e-4, atol=1e-6)
    assert float(entropy_sum) > 0


def test_routed_sampled_token_loss_equals_the_teacher_token_estimator(tok, sft_tiny, teachers, batch, tmp_path):
    ro, rows, inputs = batch
    student = copy.deepcopy(sft_tiny)
    cfg = preset("opd_sampled", OnlineConfig(max_new_tokens=8))
    out = RoutedTeacherSignal({d: TeacherSignal(t, mode="sampled") for d, t in teachers.items()})(ro, rows)
    adv = mopd_advantages(ro.logprobs, out.teacher_logprobs, ro.completion_mask, out.rewards, 2)
    logits = forward_logits(student, ro.input_ids, ro.attention_mask)
    mb = SimpleNamespace(logprobs=ro.logprobs, advantages=adv, mask=ro.completion_mask, ref_logprobs=None)
    ref, _ = ClippedPolicyGradient(cfg)(logits, token_logprobs(logits, ro.input_ids), None, mb)
    trainer = _trainer(student, teachers, tok, tmp_path, mode="sampled")
    loss, _, _ = trainer._compute_loss(student, inputs, None)
    assert abs(float(ref.detach())) > 0.1          # a near-random teacher: large per-token advantages
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_grads(loss, student), _grads(ref, student), rtol=1e-3, atol=1e-5)


def test_each_row_is_scored_by_its_domains_teacher(teachers, batch, sft_tiny):
    ro, rows, inputs = batch
    P = ro.prompt_length
    signals = {d: TeacherSignal(t, mode="sampled", placement="swap") for d, t in teachers.items()}
    got = teacher_tensors(signals, inputs["teacher_id"], ro.input_ids, ro.attention_mask, P)
    own = {d: sequence_logprobs(t, ro.input_ids, ro.attention_mask)[:, P - 1:] for d, t in teachers.items()}
    mask = ro.completion_mask[:, P - 1:].bool()
    for i, ex in enumerate(rows):
        other = next(d for d in DOMAINS if d != ex.domain)
        torch.testing.assert_close(got[i][mask[i]], own[ex.domain][i][mask[i]], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got[i][mask[i]], own[other][i][mask[i]], atol=1e-3)
    assert all(next(t.parameters()).device.type == "cpu" for t in teachers.values())   # parked back


def test_bad_input_is_named(tok, sft_tiny, teachers, tmp_path):
    student = copy.deepcopy(sft_tiny)
    with pytest.raises(ValueError, match=r"teacher_id.*'count'.*the teachers are add"):
        _trainer(student, {"add": teachers["add"]}, tok, tmp_path)
    wide = build_model("tiny", tok, seed=3, vocab_size=len(tok) + 8)
    with pytest.raises(ValueError, match="share one tokenizer"):
        _trainer(student, {"add": teachers["add"], "count": wide}, tok, tmp_path)
    with pytest.raises(ValueError, match="torch.float64"):
        _trainer(student, {"add": teachers["add"], "count": copy.deepcopy(teachers["count"]).double()}, tok,
                 tmp_path)
    with pytest.raises(ValueError, match="'teacher_id' column"):
        RoutedDistillationTrainer(student, teachers, train_dataset=scale_data.task_dataset(1).remove_columns(
            "teacher_id"), processing_class=tok)
    with pytest.raises(ValueError, match="8 processes for 4 completions per step"):
        rows_per_process(4, 8)
    with pytest.raises(ValueError, match="do not split evenly over 4 processes"):
        rows_per_process(6, 4)
    with pytest.raises(FileNotFoundError, match="prepare it first"):
        build_trainer(tmp_path / "nothing", 1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a scale run directory"):
        prepare("mopd", tmp_path / "mine", profile="smoke", steps=1, progress=False)
    assert (tmp_path / "mine" / "notes.txt").exists()
    cfg = OnlineConfig(steps=1, prompts_per_step=4, group_size=2, max_new_tokens=8)
    with pytest.raises(ValueError, match="the dataset has 2 rows but one step uses 8"):
        routed_trainer(student, teachers, tok, scale_data.task_dataset(1, domains=DOMAINS), cfg,
                       output_dir=str(tmp_path))


def test_grpo_presets_map_onto_trl_loss_settings(tmp_path):
    base = OnlineConfig(steps=3, prompts_per_step=4, group_size=4, max_new_tokens=16, lr=1e-4)
    got = {name: grpo_args(preset(name, base), output_dir=str(tmp_path), processes=2)
           for name in ("grpo", "dr_grpo", "dapo")}
    assert {n: (a.loss_type, a.scale_rewards, a.epsilon_high) for n, a in got.items()} == {
        "grpo": ("grpo", "group", 0.2), "dr_grpo": ("dr_grpo", "none", 0.2), "dapo": ("dapo", "group", 0.28)}
    a = got["grpo"]
    assert (a.per_device_train_batch_size, a.num_generations, a.max_steps, a.learning_rate,
            a.max_completion_length) == (8, 4, 3, 1e-4, 16)
    with pytest.raises(ValueError, match="minimopd's own loop"):
        grpo_args(preset("ppo", base), output_dir=str(tmp_path))


def test_trl_reward_sees_the_reasoning_tags(tok):
    ex = get_task("count").sample(1, seed=0, difficulty="easy")[0]
    text = get_task("count").solution(ex, reasoning=True)
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    funcs, weights = scale_data.reward_funcs("r1", tok)
    row = scale_data.example_rows([ex])[0]
    got = funcs[0]([row["prompt"]], [[{"role": "assistant", "content": "tags stripped"}]], completion_ids=[ids],
                   answer=[ex.answer], domain=[ex.domain], difficulty=[ex.difficulty])
    assert got == [1.5] and weights == [1.0]       # accuracy 1 x format 1 + 0.5 x format


@pytest.mark.slow
def test_two_cpu_processes_follow_the_one_process_loss_curve(tmp_path):
    """The acceptance test of the scale path: MOPD (routed, exact reverse KL) on the smoke
    profile, greedy rollouts so that both launches see the same completions."""
    one = prepare("mopd", tmp_path / "one", profile="smoke", steps=2, greedy=True, progress=False)
    two = tmp_path / "two"
    two.mkdir()
    for item in one.iterdir():
        (two / item.name).symlink_to(item)
    h1, h2 = launch(one, 1, quiet=True), launch(two, 2, quiet=True)
    assert (h1["processes"], h2["processes"]) == (1, 2)
    curve = lambda h: [s["loss"] for s in h["log"] if "loss" in s]  # noqa: E731
    assert len(curve(h1)) == len(curve(h2)) == 2 and min(curve(h1)) > 0
    assert curve(h2) == pytest.approx(curve(h1), rel=1e-4)
    start, _ = load_model(one / "student")
    final, _ = load_model(two / "final")
    moved = max(float((a - b).abs().max()) for a, b in zip(start.parameters(), final.parameters()))
    assert moved > 1e-4, "the distributed run left the student's weights unchanged"
    plan = json.loads((one / "plan.json").read_text())
    assert plan["teachers"] == ["add", "count", "reverse", "sort"]
    acc = evaluate_run(two, n_per_level=2)
    assert set(acc["final"]) == {"add", "sort", "reverse", "count", "all"}


@pytest.mark.parametrize("stage, trainer_name", [("grpo", "GRPOTrainer"), ("opd", "DistillationTrainer")])
def test_grpo_and_single_teacher_stages_train_in_process(tmp_path, stage, trainer_name):
    """The two stages on trl's own trainers, one step each in this process: trl's GRPOTrainer with
    R1's rule reward (decoded with the tags) and trl's DistillationTrainer (reverse KL, beta 1)."""
    from minimopd.scale.launch import train

    run_dir = prepare(stage, tmp_path / stage, profile="smoke", steps=1, progress=False)
    _, trainer = build_trainer(run_dir, 1)
    assert type(trainer).__name__ == trainer_name
    train(run_dir)
    log = json.loads((run_dir / "history.json").read_text())["log"][0]
    if stage == "grpo":
        assert log["reward"] > 0 and log["grad_norm"] > 0      # the smoke student earns R1's reward
    else:
        assert log["loss"] > 0 and log["grad_norm"] > 0
    start, _ = load_model(run_dir / "student")
    final, _ = load_model(run_dir / "final")
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), final.parameters()))
