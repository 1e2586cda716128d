"""Tiny causal language models built from a `transformers` config, plus safetensors save/load.

Every model in the course is a stock Hugging Face `Qwen3ForCausalLM`, only small: the same class
a researcher would later load from the Hub, so nothing here is a toy re-implementation. Weights
are created locally (`build_model`) and pretrained on the built-in corpus (stages/pretrain.py);
nothing is downloaded.

    >>> tok = build_tokenizer()
    >>> model = build_model("tiny", tok, seed=0)
    >>> save_model(model, tok, "/tmp/m"); model2, tok2 = load_model("/tmp/m")
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
from transformers.utils import logging as hf_logging

from .tokenizer import check_compatible, tokenizer_fingerprint

# Named sizes. `max_position_embeddings` bounds prompt + completion length for every stage.
# tiny: CI smoke tests (seconds). mini: the "small student" of the distillation experiments.
# small: the laptop (cpu profile). base / large: one GPU (gpu profile).
MODEL_SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, intermediate_size=192),
    "mini": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=24, intermediate_size=288),
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, intermediate_size=384),
    "base": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                 head_dim=32, intermediate_size=768),
    "large": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                  head_dim=64, intermediate_size=1536),
}
CONTEXT_LENGTH = 256
# Loading a 1M-parameter model takes milliseconds; per-shard progress bars are only noise here.
hf_logging.disable_progress_bar()


class CheckpointError(RuntimeError):
    """A saved model that cannot be used (missing, corrupt, or not safetensors)."""


def build_model(size: str, tokenizer, seed: int = 0, *, context_length: int = CONTEXT_LENGTH,
                **overrides) -> Qwen3ForCausalLM:
    """A freshly initialised causal LM of a named size, sized to `tokenizer`'s vocabulary.

    Dropout stays 0 everywhere: RL and distillation compare log-probs of the same tokens under
    two forward passes, and dropout noise would make those ratios wrong (PPO detail N+1).
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)} "
                         "or pass explicit config overrides to build_model(size, tok, **overrides)")
    kwargs = dict(
        vocab_size=len(tokenizer), max_position_embeddings=context_length, rope_theta=10000.0,
        tie_word_embeddings=True, attention_dropout=0.0, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    kwargs.update(MODEL_SIZES[size])
    kwargs.update(overrides)
    config = Qwen3Config(**kwargs)
    config.minimopd_size = size
    config.minimopd_tokenizer = tokenizer_fingerprint(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_model(model, tokenizer, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Save weights (safetensors only), config and tokenizer to a directory; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    if metadata is not None:
        (path / "minimopd.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return path


def load_model(path_or_id: str | os.PathLike, *, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, local_files_only: bool | None = None):
    """Load any Hugging Face causal LM and its tokenizer: a minimopd directory or a Hub id.

    Returns `(model, tokenizer)`. Only safetensors weights are accepted (never unpickle). A
    local directory that is missing files or holds corrupt weights raises `CheckpointError`
    with the path and the fix. Hub ids resolve from the local cache when `HF_HUB_OFFLINE=1`.
    """
    src = str(path_or_id)
    is_local = Path(src).exists()
    if is_local:
        files = {p.name for p in Path(src).iterdir()}
        if "config.json" not in files or not any(f.endswith(".safetensors") for f in files):
            raise CheckpointError(
                f"{src} is not a saved model: it needs config.json and *.safetensors weights "
                f"(found: {sorted(files)[:8]}). Save with minimopd.save_model(model, tok, path).")
    if local_files_only is None:
        local_files_only = is_local or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, use_safetensors=True, local_files_only=local_files_only, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_files_only)
    except Exception as exc:  # corrupt header, truncated file, missing tokenizer, ...
        raise CheckpointError(
            f"could not load the model at {src!r}: {type(exc).__name__}: {exc}. "
            "If this is a cached minimopd artifact, delete it (or run with a fresh "
            "MINIMOPD_CACHE) and it will be rebuilt.") from exc
    if tokenizer.pad_token is None:  # many Hub tokenizers ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token
    check_compatible(tokenizer, model)
    if device is not None:
        model = model.to(device)
    return model, tokenizer
