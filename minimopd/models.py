"""Tiny causal language models built from a `transformers` config, their forward passes, the
scalar heads of PPO and reward modelling, and safetensors save/load.

Every model in the course is a stock Hugging Face `Qwen3ForCausalLM`, only small: the same class
a researcher would later load from the Hub, so nothing here is a toy re-implementation. Weights
are created locally (`build_model`) and pretrained on the built-in corpus (stages/pretrain.py);
nothing is downloaded.

    >>> tok = build_tokenizer()
    >>> model = build_model("tiny", tok, seed=0)
    >>> save_model(model, tok, "/tmp/m"); model2, tok2 = load_model("/tmp/m")

Two wrappers add a `ScalarHead` (hidden state -> one number) to a causal LM: `PolicyWithValue`
(PPO's policy and value function in one module, so one optimiser and one gradient clip cover
both) and `RewardModel` (a score read at the last real token). Both save as the LM's own
safetensors plus `scalar_head.safetensors`, and `load_model` gives them back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
from transformers.utils import logging as hf_logging

from .kl import _prepend_zero_column
from .losses import token_logprobs
from .tokenizer import check_compatible, tokenizer_fingerprint

HEAD_FILE = "scalar_head.safetensors"

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


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions that skip left padding, so a padded row sees the same positions as alone."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits of a padded batch with padding-aware positions. Use it for every training
    forward pass so that training log-probs and sampling log-probs agree."""
    out = unwrap(model)(input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return out.logits


def sequence_logprobs(model, input_ids, attention_mask, *, temperature: float = 1.0):
    """(B, T) token-aligned log-probs of `input_ids` under `model` (column 0 is 0).

    `temperature <= 0` (greedy sampling) scores under the untempered model, as `generate` does."""
    logits = forward_logits(model, input_ids, attention_mask)
    return token_logprobs(logits, input_ids, temperature if temperature > 0 else 1.0)


def last_hidden_state(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) final hidden states (after the last norm) of a causal LM's backbone."""
    lm = unwrap(model)
    return lm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask),
                         use_cache=False).last_hidden_state


def policy_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """`(logits (B, T, V), values (B, T) or None)`: one forward pass of a policy, with the
    value head's token-aligned predictions when `model` is a `PolicyWithValue`."""
    if isinstance(model, PolicyWithValue):
        return model(input_ids, attention_mask)
    return forward_logits(model, input_ids, attention_mask), None


class ScalarHead(torch.nn.Module):
    """Hidden state (..., H) -> one number (...,): the head of both the value function and the
    reward model. Zero-initialised, so a fresh head predicts 0 everywhere (a neutral value
    baseline) and the first updates do not disturb the backbone."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.proj.weight)
        torch.nn.init.zeros_(self.proj.bias)

    @property
    def hidden_size(self) -> int:
        return self.proj.in_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1)


def _check_head(head: ScalarHead, lm, what: str) -> None:
    hidden = lm.config.hidden_size
    if head.hidden_size != hidden:
        raise ValueError(f"the {what} head reads {head.hidden_size}-dim hidden states but the model "
                         f"has hidden_size={hidden}: the head belongs to a model of another size. "
                         "Build a fresh head for this model (leave head=None).")


class _WithHead(torch.nn.Module):
    """A causal LM (`self.lm`) plus a `ScalarHead`; saved as the LM's own files + HEAD_FILE."""
    kind = ""

    def __init__(self, lm, head: ScalarHead | None = None):
        super().__init__()
        self.lm = lm
        self.head = head if head is not None else ScalarHead(lm.config.hidden_size)
        _check_head(self.head, lm, self.kind)
        self.head.to(next(lm.parameters()).device)

    @property
    def config(self):
        return self.lm.config

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def _head_extras(self) -> dict[str, torch.Tensor]:
        return {}

    def save_pretrained(self, path, **kwargs) -> None:
        self.lm.save_pretrained(path, **kwargs)
        tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        tensors.update(self._head_extras())
        save_file(tensors, str(Path(path) / HEAD_FILE), metadata={"kind": self.kind})


class PolicyWithValue(_WithHead):
    """A policy and its value function in one module (PPO): `forward` returns the LM's logits
    and the value head's predictions from one pass over the backbone.

    `values[:, t]` is V(s_t), the value of the state that predicts token t (read from the hidden
    state at t-1), token-aligned like log-probs; column 0 is 0. Sampling goes through the
    wrapped LM (`.lm`)."""
    kind = "value"

    def forward(self, input_ids, attention_mask):
        hidden = last_hidden_state(self.lm, input_ids, attention_mask)
        logits = self.lm.get_output_embeddings()(hidden)
        values = _prepend_zero_column(self.head(hidden)[:, :-1].float())
        return logits, values


class RewardModel(_WithHead):
    """r(x, y): a causal LM's backbone with a scalar head read at the last real token (right or
    left padding both work), then normalised, `(raw - norm_mean) / norm_std`, so that scores of
    reference samples can be made mean 0 and std 1 (InstructGPT) with `set_normalisation`."""
    kind = "reward"

    def __init__(self, lm, head: ScalarHead | None = None):
        super().__init__(lm, head)
        self.register_buffer("norm_mean", torch.zeros(()))
        self.register_buffer("norm_std", torch.ones(()))

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        hidden = last_hidden_state(self.lm, input_ids, attention_mask)
        cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = torch.where(attention_mask.bool(), cols, torch.zeros_like(cols)).max(dim=1).values
        raw = self.head(hidden[torch.arange(len(last), device=last.device), last]).float()
        return (raw - self.norm_mean) / self.norm_std

    def set_normalisation(self, mean: float, std: float) -> None:
        if not (std > 0):
            raise ValueError(f"the reward model's normalisation std must be > 0, got {std}")
        self.norm_mean.fill_(float(mean))
        self.norm_std.fill_(float(std))

    def _head_extras(self):
        return {"norm_mean": self.norm_mean.detach().cpu(), "norm_std": self.norm_std.detach().cpu()}


class GatedRewardModel(torch.nn.Module):
    """Llama 2's two reward models as one scorer: the safety model's score where it is below
    `threshold`, the helpfulness model's elsewhere,

        R(x, y) = R_s(x, y) if R_s(x, y) < threshold else R_h(x, y).

    Llama 2 gated on the safety score (0.15 on its sigmoid scale) and also used R_s on prompts
    tagged as unsafe; here every prompt is a notes prompt and both models are normalised (mean 0,
    std 1 on the reference policy's samples), so `threshold` is in standard deviations. Reads
    like a `RewardModel`: `(input_ids, attention_mask) -> (B,)`, `config` the helpfulness model's."""
    kind = "reward"

    def __init__(self, helpful: RewardModel, safety: RewardModel, threshold: float):
        super().__init__()
        for role, m in (("helpfulness", helpful), ("safety", safety)):
            if not isinstance(m, RewardModel):
                raise TypeError(f"GatedRewardModel's {role} model must be a RewardModel, got {type(m).__name__}")
        if helpful.config.vocab_size != safety.config.vocab_size:
            raise ValueError(f"the helpfulness and safety reward models have vocabularies of "
                             f"{helpful.config.vocab_size} and {safety.config.vocab_size} tokens: build both from "
                             "models with the same tokenizer")
        self.helpful, self.safety, self.threshold = helpful, safety, float(threshold)

    @property
    def config(self):
        return self.helpful.config

    def get_input_embeddings(self):
        return self.helpful.get_input_embeddings()

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        safe = self.safety(input_ids, attention_mask)
        return torch.where(safe < self.threshold, safe, self.helpful(input_ids, attention_mask))


def unwrap(model):
    """The causal LM inside a `PolicyWithValue` / `RewardModel`, or `model` itself."""
    return model.lm if isinstance(model, _WithHead) else model


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
    if is_local and (Path(src) / HEAD_FILE).exists():
        model = _load_head(model, Path(src) / HEAD_FILE)
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def _load_head(lm, path: Path):
    """Wrap `lm` in the PolicyWithValue / RewardModel whose head is stored at `path`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            kind = (f.metadata() or {}).get("kind")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"could not read the scalar head at {path}: {exc}") from exc
    classes = {cls.kind: cls for cls in (PolicyWithValue, RewardModel)}
    if kind not in classes:
        raise CheckpointError(f"{path} holds a head of unknown kind {kind!r}; expected one of {sorted(classes)}")
    weight = tensors.get("head.proj.weight")
    if weight is None or weight.dim() != 2:
        raise CheckpointError(f"{path} has no head weights (head.proj.weight)")
    head = ScalarHead(weight.shape[1])
    head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
    model = classes[kind](lm, head)
    if kind == "reward":
        model.set_normalisation(float(tensors["norm_mean"]), float(tensors["norm_std"]))
    return model
