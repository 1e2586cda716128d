"""Tokenizer round trips, the chat template, model build/save/load and their error paths."""
import json

import pytest
import torch

from minimopd.data import build_sft_example, collate
from minimopd.models import CheckpointError, build_model, count_parameters, load_model, save_model
from minimopd.tokenizer import (CHARACTERS, END, SPECIAL_TOKENS, build_tokenizer, chat_prompt,
                                check_compatible, tokenizer_fingerprint)


def test_roundtrip_every_character(tok):
    text = "".join(CHARACTERS) + "  double  spaces\n\n\nand 48+375=423"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)                 # one token per character
    assert tok.decode(ids) == text


def test_special_tokens_are_single_tokens(tok):
    for special in SPECIAL_TOKENS:
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, special
    assert tok.eos_token == END and tok.pad_token_id != tok.eos_token_id


def test_chat_template_single_and_multi_turn(tok):
    assert chat_prompt(tok, "What is 2+2?") == "<|user|>What is 2+2?<|end|><|assistant|>"
    convo = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "c"}]
    assert tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=True) == \
        "<|user|>a<|end|><|assistant|>b<|end|><|user|>c<|end|><|assistant|>"
    think = "<think>2+2=4</think><answer>4</answer>"
    ids = tok(think, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[0] == "<think>" and len(ids) == len("2+2=4") + len("4") + 4


def test_tokenizer_ids_stable_and_saved(tok, tmp_path):
    assert tokenizer_fingerprint(build_tokenizer()) == tokenizer_fingerprint(tok)
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    again = AutoTokenizer.from_pretrained(tmp_path)
    s = chat_prompt(tok, "Sort: 3 1 2") + "1 2 3" + END
    assert again(s, add_special_tokens=False)["input_ids"] == tok(s, add_special_tokens=False)["input_ids"]
    assert again.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                     add_generation_prompt=True) == chat_prompt(tok, "x")


def test_build_sft_example_masks_only_the_response(tok):
    ids, mask = build_sft_example(tok, "What is 2+2?", "4")
    assert sum(mask) == 2                         # "4" and <|end|>
    assert ids[-1] == tok.eos_token_id and mask[-2:] == [1, 1] and not any(mask[:-2])
    assert tok.decode(ids) == chat_prompt(tok, "What is 2+2?") + "4" + END
    # 3 special tokens + 12 characters of prompt, then "4" and <|end|>
    assert len(ids) == 3 + len("What is 2+2?") + 2


def test_collate_right_pads(tok):
    batch = collate([([5, 6, 7], [0, 1, 1]), ([8], [1])], pad_id=tok.pad_token_id)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="no examples"):
        collate([], 0)


def test_model_sizes_and_determinism(tok):
    a, b = build_model("tiny", tok, seed=3), build_model("tiny", tok, seed=3)
    c = build_model("tiny", tok, seed=4)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert count_parameters(build_model("small", tok)) > 4 * count_parameters(a)
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        build_model("huge", tok)


def test_save_load_roundtrip_safetensors(tok, tiny_model, tmp_path):
    save_model(tiny_model, tok, tmp_path / "m", metadata={"stage": "test"})
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    model, tok2 = load_model(tmp_path / "m")
    x = torch.tensor([[1, 10, 20, 30]])
    assert torch.allclose(model(x).logits, tiny_model(x).logits, atol=1e-6)
    assert tokenizer_fingerprint(tok2) == tokenizer_fingerprint(tok)
    assert json.loads((tmp_path / "m" / "minimopd.json").read_text()) == {"stage": "test"}


def test_load_errors_are_clear(tok, tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match="not a saved model"):
        load_model(tmp_path)                       # an empty directory
    save_model(tiny_model, tok, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="could not load the model"):
        load_model(tmp_path / "m")


def test_tokenizer_model_mismatch_is_reported(tok):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    small_vocab = build_model("tiny", tok, vocab_size=50)
    with pytest.raises(ValueError, match="do not belong together"):
        check_compatible(tok, small_vocab)
    model = build_model("tiny", tok)
    model.config.minimopd_tokenizer = "0" * 16     # trained with some other vocabulary
    with pytest.raises(ValueError, match="must share one tokenizer"):
        check_compatible(tok, model, role="teacher")
