"""Record every recipe's smoke-profile run (seed 0) as JSON: the golden file that
tests/test_golden.py compares against, so a refactor of the training code can prove it left the
numbers unchanged.

    OMP_NUM_THREADS=1 python tests/data/record_smoke_histories.py       # rewrites smoke_histories.json
    OMP_NUM_THREADS=1 python tests/data/record_smoke_histories.py opd   # re-records only these recipes

Re-record only when a change is *meant* to change the numbers, and say why in the commit.
Wall-clock fields are dropped (they differ on every run).
"""
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["MINIMOPD_CACHE"] = tempfile.mkdtemp(prefix="minimopd-golden-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TIME_KEYS = {"time", "wall_time", "tokens_per_s", "threads"}   # machine-dependent


def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in TIME_KEYS and k != "path"}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def weights_digest(model) -> str:
    import hashlib
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def online_runs() -> dict:
    """Online runs whose updates are real (smoke recipes often get all-zero rewards): a tiny
    model fine-tuned on easy additions, then each preset with a reward that varies in every
    group, two epochs of two minibatches, and a KL-regularised GRPO run against a frozen copy."""
    import copy
    from minimopd.models import build_model
    from minimopd.signals import VerifierSignal
    from minimopd.stages.online import OnlineConfig, preset, train_online
    from minimopd.stages.sft import SFTConfig, train_sft
    from minimopd.tasks import get_task
    from minimopd.tokenizer import build_tokenizer

    tok = build_tokenizer()
    pairs = [(e.prompt, e.answer) for e in get_task("add").sample(64, seed=0, difficulty="easy")]
    sft = train_sft(build_model("tiny", tok, seed=0), tok, pairs,
                    SFTConfig(steps=60, batch_size=16, lr=3e-3), progress=False).model
    signal = VerifierSignal(lambda ex, text: float(get_task(ex.domain).score(ex, text)) + 0.1 * len(text))
    out = {}
    for algo in ("grpo", "dr_grpo", "dapo", "rloo"):
        cfg = preset(algo, OnlineConfig(steps=3, prompts_per_step=4, group_size=4, max_new_tokens=6,
                                        domains=("add",), difficulty="easy", epochs=2, minibatches=2,
                                        lr=5e-3, seed=1))
        res = train_online(copy.deepcopy(sft), tok, cfg, signal=signal, progress=False)
        out[algo] = {"history": strip(res.history), "weights": weights_digest(res.model)}
    cfg = OnlineConfig(steps=3, prompts_per_step=4, group_size=4, max_new_tokens=6, domains=("add",),
                       difficulty="medium", kl_beta=0.04, epochs=2, lr=5e-3)
    res = train_online(copy.deepcopy(sft), tok, cfg, signal=signal, ref_model=copy.deepcopy(sft),
                       progress=False)
    out["grpo_kl"] = {"history": strip(res.history), "weights": weights_digest(res.model)}
    return out


def cpu_fingerprint() -> str:
    """The CPU's model name and a digest of its vector-instruction flags: float results of the same
    torch build differ in the last bits between CPUs (their kernels pick other instructions), so
    the golden values hold only on a CPU with this fingerprint."""
    import hashlib
    import platform
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "sse", "amx", "f16c")))
    return f"{model} ({platform.machine()}, simd {hashlib.sha256(' '.join(simd).encode()).hexdigest()[:8]})"


def record(names=None) -> dict:
    import warnings
    from minimopd.recipes import RECIPES, run_recipe
    out = {}
    for name in names or sorted(RECIPES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = run_recipe(name, profile="smoke", seed=0, progress=False)
        out[name] = summary(res)
    return out


def summary(res) -> dict:
    """What the golden file keeps of a recipe's result: its histories and evaluation rows."""
    return {"histories": strip(res.histories), "evals": {s: ev.rows for s, ev in res.evals.items()}}


if __name__ == "__main__":
    import platform
    import torch
    import transformers
    path = Path(__file__).with_name("smoke_histories.json")
    recipes = record(sys.argv[1:] or None)
    if sys.argv[1:] and path.exists():   # re-record only the named recipes, keep the others
        recipes = {**json.loads(path.read_text())["recipes"], **recipes}
    data = {"recipes": recipes, "online": online_runs(),
            "recorded_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                              "threads": torch.get_num_threads(), "machine": platform.machine(),
                              "cpu": cpu_fingerprint()}}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {path} ({', '.join(data['recipes'])}; online: {', '.join(data['online'])})")
