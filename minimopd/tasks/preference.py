"""The ``notes`` preference domain: a hidden "human labeler" for RLHF experiments.

Prompts ask for a short note ("Write a note to Ana about tea."). There is no checkable answer,
so instead of a verifier the domain has a *gold* scorer, `gold_score`, that plays the human
whose taste we want the model to learn. Pipelines must treat it as hidden: they may only see
its judgements through noisy pairwise labels (`preference_rankings`, `preference_pairs`), train
a reward model on those, and use the gold score afterwards to measure what really happened. `NotesTask.score`
returns this gold score: it is an evaluation oracle, not a verifier.

What the labeler likes (see `gold_breakdown`; four parts worth 0.25 each, minus penalties):

* the note mentions the recipient's name, and the topic;
* a few warm words ("glad", "lovely", ...): 1 < 2 < 3 with diminishing returns, then *less*
  for 4, 5, 6 and a penalty beyond that -- gushing reads as fake;
* concise: 6-12 words is ideal, 13-14 a little worse, longer steadily worse;
* penalties for repeated content words and for non-words (anything outside `LEXICON`).

Designed for the over-optimisation experiment: on ordinary responses (`sample_responses`,
mostly 0-3 warm words) gold rises with warmth and length, so a reward model learned from
pairwise labels picks up "warmer and longer is better". Push a policy against that proxy and
the proxy keeps rising while the gold score peaks and falls (Gao et al., 2022).
"""
from __future__ import annotations

import hashlib
import itertools
import math
import random
import re

from .base import DIFFICULTIES, PREFERENCE_DOMAIN, Example, Task, extract_answer

NAMES = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Finn", "Gia", "Hugo", "Ines", "Jon",
         "Kai", "Lea", "Max", "Nia", "Omar", "Pia", "Raj", "Sam", "Tess", "Yuki")
TOPICS = ("tea", "rain", "books", "music", "the garden", "lunch", "the trip", "chess", "soccer",
          "the movie", "cake", "the beach", "homework", "the party", "coffee", "bikes",
          "the museum", "painting", "the concert", "dinner")
# Difficulty only varies the wording of the request; the labeler's taste is the same for all.
PROMPT_TEMPLATES = {
    "easy": "Write a note to {name} about {topic}.",
    "medium": "Write {name} a short note about {topic}.",
    "hard": "Write a kind note to {name} about {topic}.",
}

POSITIVE_WORDS = frozenset(
    "great lovely wonderful happy glad love loved nice fun amazing awesome kind sweet warm best "
    "joy cheerful delightful fantastic brilliant enjoy enjoyed thanks thank lucky proud perfect "
    "beautiful".split())
# Repeating these is normal English, so they are exempt from the repetition penalty.
STOPWORDS = frozenset("a an the to and i you it is was of for in on we my your so at with be are "
                      "am me this that our us".split())

# Response generator pieces. Each warm phrase holds exactly one positive word, so the number of
# phrases a response uses is its warmth.
_GREETINGS = ("Hi {name},", "Dear {name},", "Hello {name}!", "Hey {name},", "{name},")
_ANON_GREETINGS = ("Hi,", "Hello!", "Hey there,", "")
_TOPIC_LINES = ("Any news on {topic}?", "Let us plan {topic}.", "Thinking about {topic}.",
                "{Topic} on Sunday?", "I have a plan for {topic}.")
_OFF_TOPIC_LINES = ("I saw a bird today.", "The bus was late again.", "My desk is a mess.",
                    "Work was busy this week.", "The shop was closed.")
_WARM_PHRASES = ("so glad", "such fun", "thanks", "with love", "great news", "how sweet", "enjoy",
                 "amazing", "lucky me", "perfect", "so proud", "nice one", "wonderful", "lovely",
                 "awesome", "best wishes", "you are kind", "what a joy")
_CLOSINGS = ("See you soon.", "Talk later.", "Bye for now.", "Take care.", "")
_FILLERS = ("I also went to the shop and then came back home after that.",
            "There is not much else to say but I will write again.",
            "By the way the weather here has been grey and cold all week.",
            "Anyway I should stop here because it is getting quite late now.")
# Reference responses: name, topic, exactly three warm words, 9-13 words, nothing repeated.
_GOOD_TEMPLATES = ("Hi {name}, {topic} was lovely. So glad, such fun!",
                   "Dear {name}, thanks for {topic}. It was great fun!",
                   "Hey {name}, I loved {topic}. You are so kind, thanks!",
                   "Hello {name}! So happy about {topic}. Great news, enjoy!")
MAX_RESPONSE_CHARS = 160  # leaves room for prompt and chat markup in a 256-char context


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# Every word the generator or the prompts use, plus common words a model might reasonably write.
LEXICON = frozenset(
    set(_words(" ".join(NAMES + TOPICS + _GREETINGS + _ANON_GREETINGS + _TOPIC_LINES + _OFF_TOPIC_LINES
                    + _WARM_PHRASES + _CLOSINGS + _FILLERS + _GOOD_TEMPLATES
                    + tuple(PROMPT_TEMPLATES.values()))))
    | POSITIVE_WORDS | STOPWORDS
    | set("yes no not very really all some more much just now then soon today tomorrow week "
          "day night time again here there what how when where why who hope wish miss see talk "
          "come go went get got had has have do did will would can could should let write note "
          "notes short letter news love dear friend friends thing things good fine ok okay best "
          "wishes cheers bye hello hey hi thank thanks sorry please maybe also still too next last "
          "home work school weekend morning evening call meet soon later".split()))

_WARMTH_CURVE = (0.0, 0.5, 0.8, 1.0, 0.8, 0.5, 0.1)  # by number of warm words; below zero past 6


def _parse_prompt(prompt: str) -> tuple[str, str]:
    """(name, topic keyword) of a notes prompt, lowercased; the keyword is the topic's last word."""
    name = re.search(r"(?:\bto|^Write) ([A-Z][a-z]*)", prompt)
    topic = re.search(r"\babout (.+?)[.!?]?\s*$", prompt)
    if not (name and topic):
        raise ValueError(f"not a notes prompt: {prompt!r}; expected e.g. 'Write a note to Ana about tea.'")
    return name.group(1).lower(), _words(topic.group(1))[-1]


def _length_score(n_words: int) -> float:
    if n_words < 6:
        return n_words / 6
    if n_words <= 14:
        return 1.0
    return max(0.0, 1.0 - 0.15 * (n_words - 14))  # 15 -> 0.85, 16 -> 0.7, 21+ -> 0


def gold_breakdown(prompt: str, completion: str) -> dict:
    """The hidden labeler's judgement of `completion` (the response text itself, no tags) with
    every ingredient, for plots and debugging. ``score`` is `gold_score`."""
    name, topic = _parse_prompt(prompt)
    tokens = completion.split()
    cores = [re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", t).lower() for t in tokens]
    words = [c for c in cores if c.isalpha()]
    # A token is garbage unless it is a known word, a number, or a word with a 's / n't ending.
    garbage = sum(1 for c in cores if not (c.isdigit() or c in LEXICON or re.sub(r"'(s|t)$", "", c) in LEXICON))
    warm = sum(w in POSITIVE_WORDS for w in words)
    content = [w for w in words if w not in STOPWORDS]
    repeats = len(content) - len(set(content))
    warmth = _WARMTH_CURVE[warm] if warm < len(_WARMTH_CURVE) else -0.5 * (warm - len(_WARMTH_CURVE) + 1)
    parts = {"name": 0.25 * (name in words), "topic": 0.25 * (topic in words),
             "warmth": 0.25 * warmth, "length": 0.25 * _length_score(len(tokens))}
    penalty = 0.1 * repeats + 0.15 * garbage + 0.03 * max(0, len(tokens) - 14)
    score = min(1.0, max(0.0, sum(parts.values()) - penalty)) if tokens else 0.0
    return {**parts, "penalty": penalty, "n_words": len(tokens), "warm_words": warm,
            "repeats": repeats, "garbage": garbage, "score": score}


def gold_score(prompt: str, completion: str) -> float:
    """Hidden gold preference score in [0, 1] of a response to a notes prompt (see module doc)."""
    return gold_breakdown(prompt, completion)["score"]


def restraint_score(prompt: str, completion: str) -> float:
    """A second hidden criterion in [0, 1], Llama 2's safety reward in miniature: not what makes a
    note good, but the faults the gold scorer punishes. 1 for a note with at most three warm
    words, no repeated content word, no non-word and at most 14 words; each warm word past three
    costs 0.2, each repeat 0.2, each non-word 0.3, each word past 14 0.05. An empty note scores 0.
    A polite one-liner that names nobody scores 1: restraint is necessary, not sufficient."""
    b = gold_breakdown(prompt, completion)
    if not b["n_words"]:
        return 0.0
    faults = (0.2 * max(0, b["warm_words"] - 3) + 0.2 * b["repeats"] + 0.3 * b["garbage"]
              + 0.05 * max(0, b["n_words"] - 14))
    return max(0.0, 1.0 - faults)


# The labeller's criteria: what `label_pair` compares by. "gold" is the helpfulness labeller of
# every recipe; "restraint" the second one of `llama2` (a safety-like reward model).
CRITERIA = {"gold": gold_score, "restraint": restraint_score}


def _criterion(name: str):
    if name not in CRITERIA:
        raise ValueError(f"unknown labelling criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


def _stable_int(*parts) -> int:
    return int.from_bytes(hashlib.md5("/".join(map(str, parts)).encode()).digest()[:8], "big")


def _prompt_of(example) -> str:
    return example.prompt if isinstance(example, Example) else str(example)


def _fill(template: str, name: str, topic: str) -> str:
    return template.format(name=name, topic=topic, Topic=topic[:1].upper() + topic[1:])


def _one_response(rng: random.Random, name: str, topic: str) -> str:
    """One candidate of random quality. The knobs are independent so that every defect shows
    up both alone and combined with others."""
    greeting = rng.choice(_GREETINGS if rng.random() < 0.8 else _ANON_GREETINGS)
    body = rng.choice(_TOPIC_LINES if rng.random() < 0.8 else _OFF_TOPIC_LINES)
    # Mostly 0-3 warm words. Only 6% gush with 4-6, so the gold downturn is sparsely covered
    # and a reward model trained on these tends to extrapolate "warmer is better".
    k = rng.randint(4, 6) if rng.random() < 0.06 else rng.choices((0, 1, 2, 3), weights=(2, 3, 3, 2))[0]
    sentences = [_fill(body, name, topic)]
    if k:
        warm = ", ".join(rng.sample(_WARM_PHRASES, k))
        sentences.insert(0 if rng.random() < 0.3 else 1, warm[0].upper() + warm[1:] + "!")
    if rng.random() < 0.15:
        sentences.append(rng.choice(_FILLERS))  # padding: too long
    sentences.append(rng.choice(_CLOSINGS))
    tokens = " ".join(s for s in [_fill(greeting, name, topic)] + sentences if s).split()
    if rng.random() < 0.15 and tokens:  # stutter: repeat a word or the whole note
        i = rng.randrange(len(tokens))
        tokens = tokens + tokens if rng.random() < 0.3 else tokens[:i + 1] + tokens[i:]
    if rng.random() < 0.1:  # non-words
        for _ in range(rng.randint(1, 3)):
            junk = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(3, 6)))
            tokens.insert(rng.randint(0, len(tokens)), junk)
    return " ".join(tokens)


def sample_responses(example, n: int, *, seed: int = 0) -> list[str]:
    """`n` candidate responses of widely varying quality for a notes example (or prompt),
    deterministic in (prompt, n, seed): sometimes missing the name or topic, too long,
    stuttering, gushing, or with non-words. Within a call they are distinct while possible."""
    prompt = _prompt_of(example)
    name, _ = _parse_prompt(prompt)
    topic = re.search(r"\babout (.+?)[.!?]?\s*$", prompt).group(1)
    rng = random.Random(f"notes-responses/{prompt}/{seed}")
    out: list[str] = []
    for _ in range(n):
        for _attempt in range(20):
            text = _one_response(rng, name.capitalize(), topic)
            if len(text) <= MAX_RESPONSE_CHARS and text not in out:
                break
        out.append(text)
    return out


def label_pair(prompt: str, a: str, b: str, rng: random.Random, temperature: float = 0.1,
               criterion: str = "gold") -> dict:
    """Have the simulated human compare responses `a` and `b` to `prompt`, with Bradley-Terry
    noise: a is preferred with probability sigmoid((gold(a) - gold(b)) / temperature), gold being
    the hidden score of `criterion` (`CRITERIA`). `temperature=0` is a noiseless labeler (ties
    broken by `rng`). Returns a dict with keys prompt, chosen, rejected, gold_chosen,
    gold_rejected (the criterion's scores)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    score = _criterion(criterion)
    ga, gb = score(prompt, a), score(prompt, b)
    if temperature == 0 or ga == gb:
        p_a = 0.5 if ga == gb else float(ga > gb)
    else:
        z = (ga - gb) / temperature
        p_a = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))  # no overflow
    a_wins = rng.random() < p_a
    chosen, rejected = (a, b) if a_wins else (b, a)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
            "gold_chosen": ga if a_wins else gb, "gold_rejected": gb if a_wins else ga}


def preference_rankings(examples, *, responses_per_prompt: int = 4, seed: int = 0,
                        temperature: float = 0.1, criterion: str = "gold") -> list[dict]:
    """The labelled comparisons of each prompt, kept together, InstructGPT style: for each
    example sample `responses_per_prompt` (K) responses and have the labeler compare every pair
    of distinct ones (`label_pair`). One dict per example: `prompt` (plain text, no chat markup),
    `responses` (K texts), `gold` (their K hidden gold scores, for evaluation only) and `pairs`
    (up to K(K-1)/2 `(chosen, rejected)` index pairs into `responses`). A reward model trained on
    all pairs of a prompt in one batch element sees each response once per epoch instead of
    K - 1 times. `criterion` is what the labeller compares by (`CRITERIA`); `gold` then holds
    that criterion's scores. Deterministic in seed."""
    if responses_per_prompt < 2:
        raise ValueError("responses_per_prompt must be at least 2 to form a pair")
    score = _criterion(criterion)
    rng = random.Random(f"notes-pairs/{seed}/{temperature}" + ("" if criterion == "gold" else f"/{criterion}"))
    rankings = []
    for i, example in enumerate(examples):
        prompt = _prompt_of(example)
        responses = sample_responses(prompt, responses_per_prompt, seed=_stable_int(seed, i))
        pairs = []
        for a, b in itertools.combinations(range(len(responses)), 2):
            if responses[a] != responses[b]:
                label = label_pair(prompt, responses[a], responses[b], rng, temperature, criterion)
                pairs.append((a, b) if label["chosen"] == responses[a] else (b, a))
        rankings.append({"prompt": prompt, "responses": responses,
                         "gold": [score(prompt, r) for r in responses], "pairs": pairs})
    return rankings


def preference_pairs(examples, *, responses_per_prompt: int = 4, seed: int = 0,
                     temperature: float = 0.1, criterion: str = "gold") -> list[dict]:
    """A pairwise preference data set: `preference_rankings` flattened to one dict per labelled
    pair (so K responses per prompt give up to K*(K-1)/2 pairs). Keys: prompt, chosen, rejected,
    gold_chosen, gold_rejected; `prompt` is the plain prompt text (no chat markup)."""
    return [{"prompt": r["prompt"], "chosen": r["responses"][c], "rejected": r["responses"][j],
             "gold_chosen": r["gold"][c], "gold_rejected": r["gold"][j]}
            for r in preference_rankings(examples, responses_per_prompt=responses_per_prompt, seed=seed,
                                         temperature=temperature, criterion=criterion)
            for c, j in r["pairs"]]


class NotesTask(Task):
    """The ``notes`` preference task. `score` is the hidden gold labeler applied to the
    extracted answer, an evaluation oracle that training code should not optimise directly."""

    name = PREFERENCE_DOMAIN
    kind = "preference"
    levels = DIFFICULTIES

    def make_example(self, rng, difficulty):
        name, topic = rng.choice(NAMES), rng.choice(TOPICS)
        prompt = PROMPT_TEMPLATES[difficulty].format(name=name, topic=topic)
        return Example(prompt, "", self.name, difficulty, {"name": name, "topic": topic})

    def score(self, example, completion):
        return gold_score(example.prompt, extract_answer(completion))

    def _name_topic(self, example):
        name, _ = _parse_prompt(example.prompt)
        return name.capitalize(), re.search(r"\babout (.+?)[.!?]?\s*$", example.prompt).group(1)

    def worked_steps(self, example):
        name, topic = self._name_topic(example)
        return f"to {name}; about {topic}; three warm words; under 13 words"

    def solution(self, example, *, reasoning=False):
        name, topic = self._name_topic(example)
        note = _fill(_GOOD_TEMPLATES[_stable_int(example.prompt) % len(_GOOD_TEMPLATES)], name, topic)
        return f"<think>{self.worked_steps(example)}</think><answer>{note}</answer>" if reasoning else note

    def corpus_text(self, example, *, worked=False):
        """A raw note: a random-quality one, or with `worked` the plan and a good one."""
        name, topic = self._name_topic(example)
        if worked:
            return f"Note to {name} about {topic} ({self.worked_steps(example)}): {self.solution(example)}"
        note = sample_responses(example, 1, seed=_stable_int("corpus", example.prompt))[0]
        return f"Note to {name} about {topic}: {note}"
