"""Tests for the `notes` preference domain: the hidden gold labeler, the response generator and
Bradley-Terry pair labelling."""
import random
import statistics

import pytest

from minimopd.tasks.preference import (LEXICON, MAX_RESPONSE_CHARS, NAMES, POSITIVE_WORDS, PROMPT_TEMPLATES, TOPICS,
                                 NotesTask, gold_breakdown, gold_score, label_pair, preference_pairs,
                                 sample_responses)
from minimopd.tasks import DIFFICULTIES, Example, get_task

P = "Write a note to Ana about tea."
GOOD = "Hi Ana, the tea was lovely. So glad, such fun!"
PAIR_KEYS = {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"}


@pytest.fixture(scope="module")
def notes():
    return get_task("notes")


@pytest.fixture(scope="module")
def sampled(notes):
    """(prompt, response, breakdown) for 8 responses to each of 120 prompts."""
    rows = []
    for ex in notes.sample(120, seed=0):
        rows += [(ex.prompt, r, gold_breakdown(ex.prompt, r)) for r in sample_responses(ex, 8, seed=1)]
    return rows


# --------------------------------------------------------------------------- the task

def test_notes_task_shape(notes):
    assert isinstance(notes, NotesTask) and notes.kind == "preference"
    exs = notes.sample(30, seed=4)
    assert [e.difficulty for e in exs[:3]] == list(DIFFICULTIES)
    for ex in exs:
        assert ex.answer == "" and ex.domain == "notes" and len(ex.prompt) <= 48
        assert ex.meta["name"] in ex.prompt and ex.meta["topic"] in ex.prompt
        assert ex.prompt == PROMPT_TEMPLATES[ex.difficulty].format(**ex.meta)


def test_preference_names_are_reexported_by_tasks():
    import minimopd.tasks as tasks
    assert tasks.gold_score is gold_score and tasks.preference_pairs is preference_pairs
    with pytest.raises(AttributeError):
        tasks.no_such_name


def test_score_is_gold_of_extracted_answer(notes):
    ex = Example(P, "", "notes", "easy")
    assert notes.score(ex, GOOD) == gold_score(P, GOOD) == 1.0
    assert notes.score(ex, f"<think>plan</think><answer>{GOOD}</answer><|end|>junk junk") == 1.0
    assert notes.score(ex, "<think>" + GOOD + "</think><answer>Bye.</answer>") == gold_score(P, "Bye.") < 0.5


def test_every_prompt_has_a_perfect_reference(notes):
    for template in PROMPT_TEMPLATES.values():
        for name in NAMES:
            for topic in TOPICS:
                prompt = template.format(name=name, topic=topic)
                assert len(prompt) <= 48
                ex = Example(prompt, "", "notes", "easy")
                assert gold_score(prompt, notes.solution(ex)) == 1.0, (prompt, notes.solution(ex))
                reasoned = notes.solution(ex, reasoning=True)
                assert reasoned.startswith("<think>") and notes.score(ex, reasoned) == 1.0


def test_corpus_text_is_a_raw_note(notes):
    exs = notes.sample(60, seed=3)
    lines = [notes.corpus_text(ex, worked=w) for ex in exs for w in (False, True)]
    assert lines == [notes.corpus_text(ex, worked=w) for ex in exs for w in (False, True)]
    assert len(set(lines)) > 100
    # Plain lines are notes of mixed quality; worked lines show the plan and a perfect note.
    plain = [gold_score(ex.prompt, line.split(": ", 1)[1]) for ex, line in zip(exs, lines[::2])]
    assert min(plain) < 0.5 < 0.9 < max(plain)
    assert all(gold_score(ex.prompt, line.split("): ", 1)[1]) == 1.0 for ex, line in zip(exs, lines[1::2]))
    for line in lines:
        assert line.startswith("Note to ") and "\n" not in line and len(line) <= 200
        assert all(" " <= c <= "~" for c in line) and "<" not in line


# --------------------------------------------------------------------------- the gold labeler

@pytest.mark.parametrize("bad", [
    "Hi, the tea was lovely. So glad, such fun!",                                # no name
    "Hi Ana, the day was lovely. So glad, such fun!",                            # off topic
    "Hi Ana, the tea was lovely. So glad, such fun! " * 2,                       # repeated
    "Hi Ana, the tea was lovely. So glad, such fun! I also went to the shop and then came back "
    "home after that, there is not much else to say.",                           # padded
    "Hi Ana, the tea was xqzt lovely. So glad, brmf such fun!",                  # non-words
    "Hi Ana, the tea was lovely, wonderful, amazing, perfect. So glad, such fun!",  # gushing
    "Ana tea.",                                                                  # too short
])
def test_good_note_beats_flawed_ones(bad):
    assert gold_score(P, GOOD) == 1.0
    assert gold_score(P, bad) < gold_score(P, GOOD) - 0.1


def test_warmth_rises_with_diminishing_returns_then_falls():
    warm = ["lovely", "glad", "great", "wonderful", "amazing", "perfect", "awesome", "sweet", "happy"]
    scores = [gold_score(P, " ".join(["Hi", "Ana,", "about", "the", "tea:"] + warm[:k]) + ".") for k in range(10)]
    gains = [b - a for a, b in zip(scores, scores[1:])]
    assert gains[0] > gains[1] > gains[2] > 0          # 0 -> 3 warm words: rising, diminishing
    assert all(g < 0 for g in gains[3:])               # beyond 3: each extra one hurts
    assert scores[9] < scores[0]                        # heavy gushing is worse than none


def test_length_is_ideal_mid_range_and_penalised_when_long():
    filler = ["also", "maybe", "tomorrow", "friend", "week", "soon", "time", "again", "news", "note", "here",
              "there", "really", "very", "just", "wish", "hope", "miss", "call"]
    base = ["Ana,", "lovely", "tea."]  # name, one warm word, topic: only the length varies below
    assert set(filler) <= LEXICON
    scores = {n: gold_score(P, " ".join(base + filler[:n - len(base)])) for n in range(3, 22)}
    assert scores[3] < scores[4] < scores[5] < scores[6]
    assert len({scores[n] for n in range(6, 15)}) == 1                   # flat over the ideal range
    assert all(scores[n] > scores[n + 1] for n in range(14, 21))         # steadily worse past 14 words


def test_penalties_for_repeats_and_garbage_grow():
    by_repeats = [gold_score(P, GOOD + " tea" * k) for k in range(4)]
    by_junk = [gold_score(P, GOOD + " zqx" * k) for k in range(4)]
    assert by_repeats == sorted(by_repeats, reverse=True) and by_repeats[0] > by_repeats[3] + 0.25
    assert by_junk == sorted(by_junk, reverse=True) and by_junk[0] > by_junk[3] + 0.3
    b = gold_breakdown(P, "Hi Ana, tea tea tea zqx!")
    assert (b["repeats"], b["garbage"], b["n_words"]) == (2, 1, 6)
    # Stopwords may repeat; numbers and contractions of known words are not garbage.
    assert gold_breakdown(P, "I hope you and I see you at 6, Ana's tea.")["repeats"] == 0
    assert gold_breakdown(P, "I hope you and I see you at 6, Ana's tea.")["garbage"] == 0


def test_gold_is_bounded_and_parses_prompts(sampled):
    rng = random.Random(0)
    junk = ["".join(rng.choice("ab !.,xyz") for _ in range(rng.randint(0, 80))) for _ in range(200)]
    for text in junk + ["", "   ", " ".join(sorted(POSITIVE_WORDS)) * 3] + [r for _, r, _ in sampled]:
        assert 0.0 <= gold_score(P, text) <= 1.0
    assert gold_score(P, "") == 0.0
    assert gold_score("Write Ben a short note about the garden.", "Ben, the garden!") > \
        gold_score("Write Ben a short note about the garden.", "Ana, the tea!")
    with pytest.raises(ValueError, match="not a notes prompt"):
        gold_score("What is 1+1?", "2")


# --------------------------------------------------------------------------- response generator

def test_sample_responses_deterministic_and_varied(notes, sampled):
    ex = notes.sample(1, seed=8)[0]
    assert sample_responses(ex, 12, seed=3) == sample_responses(ex.prompt, 12, seed=3)
    assert sample_responses(ex, 12, seed=3) != sample_responses(ex, 12, seed=4)
    assert len(set(sample_responses(ex, 12, seed=3))) == 12
    texts = [r for _, r, _ in sampled]
    assert all(len(t) <= MAX_RESPONSE_CHARS and all(" " <= c <= "~" for c in t) for t in texts)
    golds = [b["score"] for _, _, b in sampled]
    assert min(golds) < 0.2 and max(golds) == 1.0 and statistics.pstdev(golds) > 0.2
    # Each kind of flaw shows up in a real share of the candidates.
    share = lambda pred: sum(map(pred, (b for _, _, b in sampled))) / len(sampled)
    assert 0.1 < share(lambda b: b["name"] == 0) < 0.35
    assert 0.1 < share(lambda b: b["topic"] == 0) < 0.35
    assert 0.03 < share(lambda b: b["warm_words"] > 3) < 0.2
    assert 0.1 < share(lambda b: b["n_words"] > 14) < 0.6
    assert 0.05 < share(lambda b: b["repeats"] > 0) < 0.4
    assert 0.05 < share(lambda b: b["garbage"] > 0) < 0.3
    assert all(w in LEXICON for t in texts for w in ("hi", "so", "glad"))


def test_ordinary_responses_reward_warmth_but_gushing_loses(sampled):
    # The designed trap: on typical candidates gold rises with warmth (what a proxy will learn),
    # while the rarer gushing ones are clearly worse.
    mean = lambda ks: statistics.mean(b["score"] for _, _, b in sampled if b["warm_words"] in ks)
    assert mean({0}) + 0.1 < mean({1}) < mean({2, 3})
    assert mean({4, 5, 6, 7, 8, 9, 10, 11, 12}) < mean({2, 3}) - 0.15


# --------------------------------------------------------------------------- pairwise labels

def test_label_pair_follows_gold_without_noise():
    rng = random.Random(0)
    worse = "Hi, the bus was late."
    for a, b in [(GOOD, worse), (worse, GOOD)]:
        pair = label_pair(P, a, b, rng, temperature=0)
        assert set(pair) == PAIR_KEYS and pair["prompt"] == P
        assert (pair["chosen"], pair["rejected"]) == (GOOD, worse)
        assert pair["gold_chosen"] == gold_score(P, GOOD) and pair["gold_rejected"] == gold_score(P, worse)
    with pytest.raises(ValueError, match="temperature"):
        label_pair(P, GOOD, worse, rng, temperature=-1)
    # With a small gap and a large temperature the labeler does flip, about half the time.
    flips = sum(label_pair(P, GOOD, worse, rng, temperature=100)["chosen"] == worse for _ in range(400))
    assert 150 < flips < 250


def test_bradley_terry_noise_scales_with_temperature(notes):
    exs = notes.sample(60, seed=2)

    def agreement(temperature):
        pairs = preference_pairs(exs, responses_per_prompt=4, seed=0, temperature=temperature)
        decided = [p for p in pairs if p["gold_chosen"] != p["gold_rejected"]]
        return sum(p["gold_chosen"] > p["gold_rejected"] for p in decided) / len(decided)
    cold, default, hot = agreement(0.02), agreement(0.1), agreement(1.0)
    assert cold > 0.95 and cold > default > hot and hot < 0.7


def test_preference_pairs_shape_and_determinism(notes):
    exs = notes.sample(20, seed=6)
    pairs = preference_pairs(exs, responses_per_prompt=4, seed=1)
    assert pairs == preference_pairs(exs, responses_per_prompt=4, seed=1)
    assert pairs != preference_pairs(exs, responses_per_prompt=4, seed=2)
    assert len(pairs) == 20 * 6  # every pair of 4 distinct responses per prompt
    assert {p["prompt"] for p in pairs} == {e.prompt for e in exs}
    for p in pairs:
        assert set(p) == PAIR_KEYS and p["chosen"] != p["rejected"]
        assert p["gold_chosen"] == gold_score(p["prompt"], p["chosen"])
        assert p["gold_rejected"] == gold_score(p["prompt"], p["rejected"])
    assert len(preference_pairs(exs[:3], responses_per_prompt=3)) == 9
    with pytest.raises(ValueError, match="at least 2"):
        preference_pairs(exs, responses_per_prompt=1)
