"""Why `mai_thinking1` never repairs seed 1's `reverse` medium items (RESULTS.md, "`deepseek_v32`
and `mai_thinking1`"): a diagnosis of one blind spot, per word length.

    MINIMOPD_THREADS=1 python experiments/reverse_blindspot.py [--seed 1] [--samples 8]

For the seed's reasoning-SFT student, its `reverse` RL climb (`mai_thinking1`'s teacher: RL alone)
and its `reverse` SFT specialist (the `mopd` recipes' teacher), on the 300 held-out `reverse`
medium items (words of 8-10 letters): greedy accuracy per word length; then, for the student and
the climb on the 8- and 9-letter words, accuracy at T=1, pass@k (k = the `cpu` profile's GRPO group
size: a prompt with no correct sample in its group gives GRPO no gradient, and the RL stages'
prompt selection drops it) and, over the failed samples, the worked step where each first goes
wrong. The trace writes the word from its end as "position:letter" steps, positions counted from
1 at the start ("8:x 7:k ... 1:z -> ..."). The student and climb must be the ones the committed
`mai_thinking1` run of the seed used (experiments/results/v3/lineage_mai_sS.json); the script
stops otherwise. Last, `at_the_slip`: with the correct trace written up to the step the student
slips on, how sure each model is of the next letter, and the exact reverse and forward KL from the
student (and the climb) to the SFT specialist there, with their gradients' size. Writes
experiments/results/v3/reverse_blindspot_sS.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

import torch

from minimopd import distill, get_profile
from minimopd.artifacts import sft_artifact
from minimopd.kl import generalized_jsd
from minimopd.losses import token_logprobs
from minimopd.models import forward_logits
from minimopd.rollout import generate
from minimopd.tasks import get_task
from minimopd.tokenizer import chat_prompt

STEP = re.compile(r"(\d+):([a-z])")


def first_wrong_step(word: str, text: str) -> int | None:
    """The position the first wrong worked step should have held: the n-th step written must be
    `f"{len(word) - n + 1}:{word[len(word) - n]}"`; a wrong letter, a skipped or repeated position
    and a trace that stops early all count. None when all `len(word)` steps are right."""
    steps = STEP.findall(text.split("->")[0])
    for n, pos in enumerate(range(len(word), 0, -1)):
        if n >= len(steps) or steps[n] != (str(pos), word[pos - 1]):
            return pos
    return None


def greedy_by_length(art, task, examples, max_new_tokens, batch=50) -> dict[int, float]:
    scores = collections.defaultdict(list)
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        ro = generate(art.model, art.tokenizer, [e.prompt for e in chunk], temperature=0.0,
                      max_new_tokens=max_new_tokens)
        for ex, text in zip(chunk, ro.texts):
            scores[len(ex.meta["word"])].append(task.score(ex, text))
    return {n: round(sum(s) / len(s), 3) for n, s in sorted(scores.items())}


def sampled(art, task, examples, k, max_new_tokens, batch=16) -> dict:
    per_sample, per_prompt, wrong_at, failed = [], [], collections.Counter(), 0
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        ro = generate(art.model, art.tokenizer, [e.prompt for e in chunk], num_samples=k, temperature=1.0,
                      seed=i, max_new_tokens=max_new_tokens)
        for j, ex in enumerate(chunk):
            texts = ro.texts[j * k:(j + 1) * k]
            scores = [task.score(ex, t) for t in texts]
            per_sample += scores
            per_prompt.append(max(scores))
            for text, score in zip(texts, scores):
                if not score:
                    failed += 1
                    pos = first_wrong_step(ex.meta["word"], text)
                    wrong_at[f"{len(ex.meta['word'])} letters, position {pos}" if pos else "steps all right"] += 1
    return {"items": len(examples), "samples": len(per_sample), "failed": failed,
            "t1_acc": round(sum(per_sample) / len(per_sample), 3),
            f"pass@{k}": round(sum(per_prompt) / len(per_prompt), 3),
            "first_wrong_step": dict(wrong_at.most_common())}


def at_the_slip(models: dict, teacher: str, examples) -> dict:
    """Next-token distributions at the step the student slips on (position len // 2 + len % 2 of
    the 8- and 9-letter words), the correct trace written up to it: each model's probability of
    the right letter and of its own top letter; and for each other model, the per-token reverse and
    forward KL to `teacher` there (the library's `kl.generalized_jsd`, beta 1 and 0) with the norms
    of their gradients with respect to the model's logits, by autograd: what an exact-KL
    distillation step from `teacher` could do at that token."""
    tok = models[teacher].tokenizer
    ids = []
    for ex in examples:          # the correct trace up to and including the slip's letter
        word = ex.meta["word"]
        slip = (len(word) + 1) // 2
        steps = "".join(f"{i}:{word[i - 1]} " for i in range(len(word), slip - 1, -1))
        ids.append(tok(chat_prompt(tok, ex.prompt) + f"<think>{steps.rstrip()}", add_special_tokens=False)["input_ids"])
    width = max(map(len, ids))
    batch = torch.tensor([[tok.pad_token_id] * (width - len(i)) + i for i in ids])   # left-padded
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(i) for i in ids])[:, None]).long()
    with torch.no_grad():
        logits = {name: forward_logits(art.model, batch, mask).float() for name, art in models.items()}
    out = {}
    for name, lg in logits.items():
        p = torch.softmax(lg[:, -2], -1)                     # the distribution that predicts the slip's letter
        p_right = token_logprobs(lg, batch)[:, -1].exp()
        rec = {"p_right": round(p_right.median().item(), 4), "p_top": round(p.max(-1).values.median().item(), 4),
               "top_is_right": round((p.argmax(-1) == batch[:, -1]).float().mean().item(), 3)}
        if name != teacher:
            for kind, beta in (("reverse", 1.0), ("forward", 0.0)):
                student = lg.clone().requires_grad_(True)
                kl = generalized_jsd(student, logits[teacher], beta=beta)[:, -1]
                kl.sum().backward()                          # each row's KL depends on its own logits only
                rec[f"{kind}_kl"] = round(kl.median().item(), 3)
                rec[f"{kind}_grad_norm"] = round(student.grad[:, -2].norm(dim=-1).median().item(), 4)
        out[name] = rec
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--samples", type=int, default=None, help="k of pass@k (default: the profile's group size)")
    args = ap.parse_args(argv)
    prof = get_profile("cpu")
    k = args.samples or prof.rl_group_size
    max_new = prof.max_new_tokens * 4                       # the evaluation's budget for traces
    task = get_task("reverse")
    items = task.sample(300, split="test", seed=args.seed, difficulty="medium")
    short = [e for e in items if len(e.meta["word"]) < 10]
    run = Path(__file__).parent / "results" / "v3" / f"lineage_mai_s{args.seed}.json"
    used = json.loads(run.read_text())["recipes"]["mai_thinking1"]["info"] if run.exists() else {}
    student = sft_artifact(prof, seed=args.seed, reasoning=True, progress=False)
    models = {"student": student,
              "climb": distill.specialist_artifact(student, prof, "reverse", seed=args.seed, sft=False, rl=True,
                                                   progress=False),
              "sft_specialist": distill.specialist_artifact(student, prof, "reverse", seed=args.seed, progress=False)}
    for name, stage in (("student", "student"), ("climb", "teacher_reverse")):
        want = Path(used[stage]["path"]).name if stage in used else None
        if want != models[name].path.name:
            raise SystemExit(f"{name}: got {models[name].path.name}, but {run} used {want}; run the mai_thinking1 "
                             f"recipe on seed {args.seed} first (RESULTS.md gives the command)")
    out = {"seed": args.seed, "k": k, "items_by_length": dict(sorted(collections.Counter(
        len(e.meta["word"]) for e in items).items())), "greedy_by_length": {}, "sampled_8_9_letters": {}}
    for name, art in models.items():
        out["greedy_by_length"][name] = greedy_by_length(art, task, items, max_new)
        print(name, art.path.name, "greedy by word length:", out["greedy_by_length"][name], flush=True)
    for name in ("student", "climb"):
        out["sampled_8_9_letters"][name] = sampled(models[name], task, short, k, max_new)
        print(name, "8-9 letters at T=1:", out["sampled_8_9_letters"][name], flush=True)
    out["at_the_slip"] = at_the_slip(models, "sft_specialist", short)
    print("at the slip, the correct trace written up to it:", out["at_the_slip"], flush=True)
    path = Path(__file__).parent / "results" / "v3" / f"reverse_blindspot_s{args.seed}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
