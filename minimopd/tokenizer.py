"""A character-level chat tokenizer, built locally as a Hugging Face `PreTrainedTokenizerFast`.

Why characters? The course's models are tiny and trained from scratch on synthetic tasks
(addition, sorting, ...). A character vocabulary makes every digit its own token, so arithmetic
is learnable by a 1M-parameter model, and the tokenizer needs no training data or download.

The chat format is deliberately plain so students can read raw token streams:

    <|user|>What is 48+375?<|end|><|assistant|>423<|end|>

`<|end|>` closes every turn and doubles as the end-of-sequence token: generation stops there.
Reasoning traces use `<think>...</think><answer>...</answer>` (DeepSeek-R1's template); those four
tags are single tokens so a format reward can be checked on token ids as well as on text.

    >>> tok = build_tokenizer()
    >>> tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
    ...                         add_generation_prompt=True)
    '<|user|>hi<|end|><|assistant|>'
"""
from __future__ import annotations

import hashlib
import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, USER, ASSISTANT, END = "<|pad|>", "<|bos|>", "<|user|>", "<|assistant|>", "<|end|>"
THINK, THINK_END, ANSWER, ANSWER_END = "<think>", "</think>", "<answer>", "</answer>"
SPECIAL_TOKENS = (PAD, BOS, USER, ASSISTANT, END, THINK, THINK_END, ANSWER, ANSWER_END)
# Printable ASCII (space .. ~) plus newline: everything the built-in tasks and corpus use.
CHARACTERS = tuple(sorted(set(string.printable) - set("\t\r\x0b\x0c")))

# Jinja chat template (what `apply_chat_template` renders). A system turn is folded into the
# first user turn because the tiny models never see system prompts in training.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' or message['role'] == 'system' %}"
    "{{ '<|user|>' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return the course tokenizer: one token per character, plus the chat special tokens.

    Ids are stable across calls (specials first, then sorted characters), so a model saved by
    one session loads against a tokenizer built by another.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    # Split every character into its own piece; special tokens are matched before this runs.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join characters back without inserting spaces
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=END,
        additional_special_tokens=[USER, ASSISTANT, THINK, THINK_END, ANSWER, ANSWER_END],
        padding_side="right",
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def chat_prompt(tokenizer, prompt: str) -> str:
    """The text of a single-turn conversation up to the start of the assistant's answer."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary in id order: equal fingerprints mean interchangeable ids."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return hashlib.sha256("\x00".join(vocab).encode()).hexdigest()[:16]


def check_compatible(tokenizer, model, *, role: str = "model") -> None:
    """Raise a clear error when `tokenizer` cannot drive `model`.

    Models built by minimopd record the fingerprint of the tokenizer they were built with in
    `config.minimopd_tokenizer`; any other model is checked on vocabulary size alone. Teachers
    and students go through the same check: distillation compares log-probs token by token,
    which is meaningless across vocabularies.
    """
    vocab = len(tokenizer)
    n_embed = model.get_input_embeddings().weight.shape[0]
    if vocab > n_embed:
        raise ValueError(
            f"the tokenizer has {vocab} tokens but the {role}'s embedding has {n_embed} rows: "
            "they do not belong together. Use the tokenizer saved next to the model "
            "(minimopd.load_model returns both) or build the model with this tokenizer."
        )
    expected = getattr(model.config, "minimopd_tokenizer", None)
    if expected is not None and expected != tokenizer_fingerprint(tokenizer):
        raise ValueError(
            f"the tokenizer's vocabulary differs from the one the {role} was trained with "
            f"(fingerprint {tokenizer_fingerprint(tokenizer)} != {expected}); use the tokenizer "
            "saved with the model (minimopd.load_model(path)). Teacher and student must share "
            "one tokenizer."
        )
