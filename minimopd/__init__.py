"""minimopd: post-training from InstructGPT to multi-teacher on-policy distillation, in miniature.

The public API. Names are imported lazily (PEP 562) so `import minimopd.losses` in a lab does not
pay for loading transformers; each name lives in the module listed next to it.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "tokenizer": ("build_tokenizer", "chat_prompt"),
    "tasks": ("DIFFICULTIES", "Example", "FunctionTask", "Task", "UnknownTaskError",
              "extract_answer", "format_ok", "get_task", "list_tasks", "register_task"),
    "models": ("MODEL_SIZES", "CheckpointError", "PolicyWithValue", "RewardModel", "build_model",
               "load_model", "save_model", "sequence_logprobs"),
    "rollout": ("Rollout", "generate"),
    "profiles": ("Profile", "get_profile"),
    "evaluation": ("EvalResult", "evaluate"),
    "recipes": ("RECIPES", "base_model", "register_recipe", "run_recipe", "sft_model"),
}
# No exported name may equal a submodule's name: importing the submodule would bind the module
# to that attribute and shadow the function (why evaluation.py is not called evaluate.py).
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value          # cache: the next access is a plain attribute
        return value
    raise AttributeError(f"module 'minimopd' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
