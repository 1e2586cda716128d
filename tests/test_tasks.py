"""Tests for minimopd.tasks: sampling, splits, scoring, parsing, text budgets and the registry."""
import random
import re

import pytest

from minimopd.tasks import (DIFFICULTIES, PREFERENCE_DOMAIN, VERIFIABLE_DOMAINS, Example, FunctionTask,
                            Task, UnknownTaskError, extract_answer, format_ok, get_task, list_tasks,
                            register_task, split_of, unregister_task)

ALL_DOMAINS = VERIFIABLE_DOMAINS + (PREFERENCE_DOMAIN,)
RESERVED = ("<|", "<think>", "</think>", "<answer>", "</answer>")


def _ascii_ok(text):
    return all(" " <= c <= "~" or c == "\n" for c in text)


@pytest.fixture
def scratch_registry():
    """Let a test register tasks; remove whatever it added afterwards."""
    before = set(list_tasks())
    yield
    for name in set(list_tasks()) - before:
        unregister_task(name)
    assert set(list_tasks()) == before


def _gen_max(rng, difficulty):
    xs = rng.sample(range(100), {"easy": 3, "medium": 5, "hard": 7}[difficulty])
    return "Max of: " + " ".join(map(str, xs)), str(max(xs))


# --------------------------------------------------------------------------- registry

def test_builtins_registered_by_kind():
    assert list_tasks() == sorted(ALL_DOMAINS)
    assert list_tasks("verifiable") == sorted(VERIFIABLE_DOMAINS)
    assert list_tasks("preference") == [PREFERENCE_DOMAIN]
    for name in ALL_DOMAINS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name


def test_unknown_task_error_names_known_tasks_and_fix():
    with pytest.raises(UnknownTaskError) as info:
        get_task("nope")
    msg = str(info.value)
    assert isinstance(info.value, KeyError)
    assert msg.startswith("unknown task 'nope'; known tasks: add, count, notes, reverse, sort")
    assert "minimopd.register_task(" in msg


def test_register_refuses_duplicates_and_non_tasks():
    add = get_task("add")
    with pytest.raises(ValueError, match="overwrite=True"):
        register_task(add)
    assert register_task(add, overwrite=True) is add  # allowed, and the registry is unchanged
    with pytest.raises(TypeError, match="sample"):
        register_task(object())

    class NoScore:
        name = "noscore"

        def sample(self, n, **kw):
            return []
    with pytest.raises(TypeError, match="score"):
        register_task(NoScore())
    with pytest.raises(ValueError, match="task name"):
        register_task(FunctionTask("has space", _gen_max))
    assert "noscore" not in list_tasks() and "has space" not in list_tasks()


def test_function_task_round_trip(scratch_registry):
    task = register_task(FunctionTask("max", _gen_max, worked=lambda p, a: "scan -> " + a))
    assert get_task("max") is task and "max" in list_tasks("verifiable")
    exs = get_task("max").sample(30, seed=1)
    assert exs == get_task("max").sample(30, seed=1)
    assert [e.difficulty for e in exs[:3]] == list(DIFFICULTIES)
    for ex in exs:
        nums = [int(x) for x in ex.prompt.split(":")[1].split()]
        assert ex.domain == "max" and ex.answer == str(max(nums))
        assert task.score(ex, ex.answer) == 1.0
        assert task.score(ex, str(min(nums))) == 0.0
        assert task.score(ex, task.solution(ex, reasoning=True)) == 1.0
        assert task.solution(ex, reasoning=True) == f"<think>scan -> {ex.answer}</think><answer>{ex.answer}</answer>"
        assert task.corpus_text(ex) == f"{ex.prompt} {ex.answer}"
        assert task.corpus_text(ex, worked=True) == f"{ex.prompt} scan -> {ex.answer}"
    bare = FunctionTask("bare", _gen_max, worked=lambda p, a: "scan")  # steps without the answer
    ex = bare.sample(1)[0]
    assert bare.corpus_text(ex, worked=True) == f"{ex.prompt} scan -> {ex.answer}"
    with pytest.raises(ValueError, match="already registered"):
        register_task(FunctionTask("max", _gen_max))
    unregister_task("max")
    with pytest.raises(UnknownTaskError):
        get_task("max")


def test_function_task_options_and_validation(scratch_registry):
    corpus = FunctionTask("m2", _gen_max, corpus=lambda p, a, s: f"max {p[8:]} is {a}" + (f" ({s})" if s else ""),
                          worked=lambda p, a: "look", levels=("easy",))
    ex = corpus.sample(1)[0]
    assert ex.difficulty == "easy" and corpus.corpus_text(ex).startswith("max ")
    assert corpus.corpus_text(ex, worked=True).endswith("(look)")
    with pytest.raises(ValueError, match="valid levels: easy"):
        corpus.sample(1, difficulty="hard")
    plain = FunctionTask("m3", _gen_max)
    with pytest.raises(NotImplementedError, match="worked"):
        plain.solution(plain.sample(1)[0], reasoning=True)
    with pytest.raises(ValueError, match="reserved markup"):
        FunctionTask("bad", lambda rng, d: ("<answer>1</answer>", "1")).sample(1)
    with pytest.raises(ValueError, match="ASCII"):
        FunctionTask("bad", lambda rng, d: ("caf\u00e9?", "1")).sample(1)
    with pytest.raises(TypeError, match="prompt, answer"):
        FunctionTask("bad", lambda rng, d: ("only a prompt", 3)).sample(1)
    with pytest.raises(ValueError, match="levels"):
        FunctionTask("bad", _gen_max, levels=("extreme",))


def test_tiny_item_space_repeats_but_never_crosses_split():
    # Ten possible prompts: distinct while they last, then repeats, always from one split.
    task = FunctionTask("tiny", lambda rng, d: (f"Echo {rng.randint(0, 9)}", "x"))
    for split in ("train", "test"):
        pool = {f"Echo {i}" for i in range(10) if split_of(f"Echo {i}") == split}
        exs = task.sample(40, split=split, difficulty="easy")
        assert {e.prompt for e in exs} == pool
        assert len(exs) == 40


# --------------------------------------------------------------------------- sampling and splits

@pytest.mark.parametrize("name", ALL_DOMAINS)
def test_sample_is_deterministic_and_seeded(name):
    task = get_task(name)
    a = task.sample(24, seed=3)
    assert a == task.sample(24, seed=3)
    assert a != task.sample(24, seed=4)
    assert a != task.sample(24, seed=3, split="test")
    assert task.sample(10, seed=3) == a[:10]  # prefix-stable in n
    assert [e.difficulty for e in a] == list(DIFFICULTIES) * 8  # mixed evenly, round-robin
    assert all(e.domain == name for e in a)
    assert len({e.prompt for e in a}) == len(a)


def test_difficulty_accepts_one_level_or_several():
    task = get_task("sort")
    assert {e.difficulty for e in task.sample(9, difficulty="hard")} == {"hard"}
    both = task.sample(10, difficulty=["easy", "hard"])
    assert [e.difficulty for e in both] == ["easy", "hard"] * 5
    assert task.sample(10, difficulty=("easy", "hard")) == both
    assert task.sample(0) == []


@pytest.mark.parametrize("bad", ["extreme", ["easy", "Hard"], []])
def test_unknown_difficulty_names_valid_levels(bad):
    with pytest.raises(ValueError, match="valid levels: easy, medium, hard"):
        get_task("add").sample(3, difficulty=bad)


def test_unknown_split_and_bad_n():
    with pytest.raises(ValueError, match="valid splits: train, test"):
        get_task("add").sample(3, split="validation")
    with pytest.raises(ValueError, match="non-negative"):
        get_task("add").sample(-1)


def test_split_of_is_a_stable_80_20_hash():
    prompts = [f"What is {i}+{j}?" for i in range(60) for j in range(60)]
    test_share = sum(split_of(p) == "test" for p in prompts) / len(prompts)
    assert 0.17 < test_share < 0.23
    # Pinned values: these change if someone swaps MD5 for Python's per-process salted hash().
    assert [split_of(p) for p in ("What is 48+375?", "Sort: 5 12 3", "What is 2+1?", "What is 6+1?",
                                  "Echo 0", "Echo 1")] == ["train", "train", "test", "test", "test", "train"]


@pytest.mark.parametrize("name", ALL_DOMAINS)
def test_train_and_test_never_overlap(name):
    task = get_task(name)
    for level in DIFFICULTIES:
        train = task.sample(1500, split="train", seed=7, difficulty=level)
        test = task.sample(500, split="test", seed=7, difficulty=level)
        assert all(split_of(e.prompt) == "train" for e in train)
        assert all(split_of(e.prompt) == "test" for e in test)
        assert not {e.prompt for e in train} & {e.prompt for e in test}


# --------------------------------------------------------------------------- scoring and solutions

@pytest.mark.parametrize("name", ALL_DOMAINS)
def test_reference_solutions_score_one(name):
    task = get_task(name)
    for ex in task.sample(60, seed=11) + task.sample(30, split="test", seed=11):
        assert task.score(ex, task.solution(ex)) == 1.0
        reasoned = task.solution(ex, reasoning=True)
        assert format_ok(reasoned)
        assert task.score(ex, reasoned) == 1.0
        assert task.score(ex, reasoned + "<|end|>") == 1.0


def _wrong_answers(ex):
    if ex.domain == "add":
        return [str(int(ex.answer) + 1), str(int(ex.answer) - 10), ex.answer + "0"]
    if ex.domain == "sort":
        items = ex.prompt.split(":")[1].split()
        return [" ".join(items[::-1]) if items != sorted(items, key=int)[::-1] else "0",
                " ".join(ex.answer.split()[:-1]), ex.answer.replace(" ", "")]
    if ex.domain == "reverse":
        word = ex.prompt.split(": ")[1]
        return [word if word != word[::-1] else word + "a", ex.answer[:-1]]
    return [str(int(ex.answer) + 1), str(max(0, int(ex.answer) - 1)) if ex.answer != "0" else "5"]


@pytest.mark.parametrize("name", VERIFIABLE_DOMAINS)
def test_wrong_answers_score_zero(name):
    task = get_task(name)
    for ex in task.sample(60, seed=5):
        for wrong in _wrong_answers(ex):
            assert wrong != ex.answer
            assert task.score(ex, wrong) == 0.0
            assert task.score(ex, f"<think>{ex.answer}</think><answer>{wrong}</answer>") == 0.0
        assert task.score(ex, "") == 0.0
        assert task.score(ex, f"{ex.answer} and more") == 0.0


def test_score_normalises_whitespace_and_tags():
    ex = Example("Sort: 5 12 3", "3 5 12", "sort", "easy")
    task = get_task("sort")
    assert task.score(ex, "  3  5\n12 ") == 1.0
    assert task.score(ex, "<think>min 3</think>\n<answer> 3 5 12 </answer><|end|>") == 1.0
    assert task.score(ex, "<think>3 5 12</think>") == 0.0  # an answer only inside <think> is no answer
    assert task.score(ex, "3 5 12 <|end|><|user|>Sort: 1 2<|end|>") == 1.0


def test_example_equality_ignores_meta():
    a = Example("Reverse: abc", "cba", "reverse", "easy", {"word": "abc"})
    b = Example("Reverse: abc", "cba", "reverse", "easy")
    assert a == b and hash(a) == hash(b)
    assert a != Example("Reverse: abc", "cba", "reverse", "hard")
    # Methods parse the prompt, so examples rebuilt without meta (e.g. from JSON) still work.
    assert get_task("reverse").solution(b, reasoning=True) == "<think>3:c 2:b 1:a -> cba</think><answer>cba</answer>"


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("completion, expected", [
    ("<think>x</think><answer>42</answer>", "42"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),               # the last answer wins
    ("<think>a</think> 17 ", "17"),                                      # no tags: after </think>
    ("<think>a</think>1</think> 18", "18"),                              # the last </think>
    ("  plain   answer\n text ", "plain answer text"),                  # whitespace collapsed
    ("423<|end|>", "423"),
    ("<think>s</think><answer>7</answer><|end|><|user|><answer>9</answer>", "7"),  # after end: ignored
    ("<think>s</think><answer> 3  5 12 <|end|>", "3 5 12"),              # unclosed answer, cut at end
    ("", ""),
])
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize("completion", [
    "<think>a</think><answer>b</answer>",
    "  <think>\n8+5=13 c1\n</think>\n <answer> 13 </answer>\n",
    "<think></think><answer>1</answer>",
    "<think>a</think><answer>b</answer><|end|>",
])
def test_format_ok_accepts(completion):
    assert format_ok(completion)


@pytest.mark.parametrize("completion", [
    "42",
    "<answer>b</answer>",
    "<think>a</think>",
    "<answer>b</answer><think>a</think>",                        # wrong order
    "x<think>a</think><answer>b</answer>",                       # text before
    "<think>a</think><answer>b</answer>x",                       # text after
    "<think>a</think>so<answer>b</answer>",                      # text between
    "<think>a<think>b</think><answer>c</answer>",                # two <think>
    "<think>a</think><answer>b</answer><answer>c</answer>",      # two answers
    "<think>a</think><answer>b<answer>c</answer>",
    "<think>a</think><answer>b",                                 # unclosed
])
def test_format_ok_rejects(completion):
    assert not format_ok(completion)


# --------------------------------------------------------------------------- text forms and budgets

@pytest.mark.parametrize("name", ALL_DOMAINS)
def test_charset_and_length_budgets(name):
    task = get_task(name)
    for level in DIFFICULTIES:
        for ex in task.sample(150, seed=2, difficulty=level):
            steps = task.worked_steps(ex)
            assert len(ex.prompt) <= 48 and len(ex.answer) <= 24 and len(steps) <= 150
            texts = [ex.prompt, ex.answer, steps, task.solution(ex), task.corpus_text(ex),
                     task.corpus_text(ex, worked=True)]
            for text in texts:
                assert _ascii_ok(text) and "\n" not in text, text
                assert not any(tag in text for tag in RESERVED), text
            assert task.solution(ex, reasoning=True) == f"<think>{steps}</think><answer>{task.solution(ex)}</answer>"
            assert task.corpus_text(ex) != ex.prompt and len(task.corpus_text(ex, worked=True)) <= 200


@pytest.mark.parametrize("prompt, answer, steps, corpus, worked", [
    ("What is 48+375?", "423", "8+5=13 c1; 4+7+1=12 c1; 0+3+1=4 -> 423", "48+375=423",
     "48+375: 8+5=13 c1; 4+7+1=12 c1; 0+3+1=4 -> 423"),
    ("What is 95+7?", "102", "5+7=12 c1; 9+0+1=10 c1 -> 102", "95+7=102", "95+7: 5+7=12 c1; 9+0+1=10 c1 -> 102"),
    ("Sort: 5 12 3", "3 5 12", "min 3; min 5; min 12 -> 3 5 12", "sort 5 12 3 -> 3 5 12",
     "sort 5 12 3: min 3; min 5; min 12 -> 3 5 12"),
    ("Reverse: abcd", "dcba", "4:d 3:c 2:b 1:a -> dcba", "reverse abcd -> dcba",
     "reverse abcd: 4:d 3:c 2:b 1:a -> dcba"),
    ("Count a in: abacab", "3", "a1 b1 a2 c2 a3 b3 -> 3", "count a in abacab -> 3",
     "count a in abacab: a1 b1 a2 c2 a3 b3 -> 3"),
])
def test_worked_steps_and_corpus_forms(prompt, answer, steps, corpus, worked):
    domain = {"What": "add", "Sort": "sort", "Reverse": "reverse", "Count": "count"}[prompt.split()[0].rstrip(":")]
    task, ex = get_task(domain), Example(prompt, answer, domain, "easy")
    assert task.worked_steps(ex) == steps
    assert task.corpus_text(ex) == corpus
    assert task.corpus_text(ex, worked=True) == worked


def test_difficulty_knobs():
    def sizes(name, level, fn):
        return {fn(ex) for ex in get_task(name).sample(300, seed=1, difficulty=level)}
    operand_digits = lambda ex: tuple(len(x) for x in re.findall(r"\d+", ex.prompt))
    assert sizes("add", "easy", operand_digits) == {(2, 2)}
    assert sizes("add", "medium", operand_digits) == {(3, 3), (3, 4), (4, 3), (4, 4)}
    assert sizes("add", "hard", operand_digits) == {(5, 5), (5, 6), (6, 5), (6, 6)}
    for level, k in zip(DIFFICULTIES, (4, 6, 8)):
        assert sizes("sort", level, lambda ex: len(ex.prompt.split()) - 1) == {k}
    for level, lens in zip(DIFFICULTIES, ({4, 5}, {8, 9, 10}, {15, 16, 17, 18})):
        assert sizes("reverse", level, lambda ex: len(ex.answer)) == lens
    for level, lens in zip(DIFFICULTIES, (range(4, 6), range(10, 15), range(22, 29))):
        assert sizes("count", level, lambda ex: len(ex.prompt.split(": ")[1])) == set(lens)
    counts = sizes("count", "hard", lambda ex: int(ex.answer))
    assert len(counts) >= 6  # counts actually vary
    letters = set("".join(ex.prompt.split(": ")[1] for ex in get_task("count").sample(100, seed=0)))
    assert letters == set("abcde")
    assert all(len(set(ex.answer.split())) == 8 for ex in get_task("sort").sample(50, difficulty="hard"))


def test_sampling_ignores_global_random_state():
    random.seed(1)
    a = get_task("reverse").sample(12, seed=9)
    random.seed(2)
    random.random()
    assert get_task("reverse").sample(12, seed=9) == a
