"""What the miniature's two compute savings buy: shared prompts in the forget-only point, answer-only logits in training.

    python bench/bench_miniature.py [--models tiny-llama tiny-qwen3 tiny-mistral] [--reps 5] [--threads 1]

For each model: the finetuned tiny target when `outputs/models` holds it (the main job builds them; never built here),
else a random model of the same architecture and tokenizer. Prints, per model,

- the forget set's scoring (`score_sequences` on forget01: answer, paraphrase and perturbations, batch 64) with the
  full sequences vs `share_prompts=True`: seconds, ratio, and the largest difference of the per-sequence NLL;
- one training step (forward + backward + AdamW, 8 forget QA) with the full logits (`token_nll`) vs `model_nll`:
  milliseconds, ratio, and the difference of the loss.

Median [min–max] over `--reps` after one warm-up, one process. Asserts nothing about time.
"""
from __future__ import annotations
import argparse, os, statistics, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import numpy as np
import torch


def timed(f, reps: int) -> list[float]:
    "Seconds of `reps` calls of `f`, after one warm-up call."
    f(); out = []
    for _ in range(reps):
        t = time.perf_counter(); f(); out.append(time.perf_counter() - t)
    return out


def spread(xs: list[float], unit: float = 1.0, fmt: str = ".3f") -> str:
    "Median [min–max] of `xs` × `unit`."
    return f"{statistics.median(xs) * unit:{fmt}} [{min(xs) * unit:{fmt}}–{max(xs) * unit:{fmt}}]"


def model_for(name: str):
    "(model, tokenizer, template, what) of tiny `name`: the cached target if built, else a random one."
    from baldro_nb.data import STUDY_SOURCE
    from baldro_nb.finetune import tiny_finetuned_dir
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    spec = get_spec(name); d = tiny_finetuned_dir(name, "full", 0, STUDY_SOURCE)
    path, what = (d, "finetuned target") if (d/"DONE").exists() else (name, "random base model")
    return load_model(str(path), fast_masks=True), load_tokenizer(str(path), spec), spec.template, what


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny-llama", "tiny-qwen3", "tiny-mistral"])
    ap.add_argument("--reps", type=int, default=5); ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(); torch.set_num_threads(a.threads)
    from baldro_nb.data import STUDY_SOURCE, QADataset, QACollator, load_tofu
    from baldro_nb.evaluation import encode_eval_set, eval_sets, score_sequences
    from baldro_nb.objectives import token_nll, model_nll
    for name in a.models:
        m, tok, tpl, what = model_for(name)
        es = encode_eval_set("forget", eval_sets("forget01")["forget"], tok, tpl, STUDY_SOURCE)
        pad = tok.pad_token_id
        full = lambda: score_sequences(m, es.seqs, es.starts, pad, 64)
        shared = lambda: score_sequences(m, es.seqs, es.starts, pad, 64, share_prompts=True)
        d = float(np.abs(full().avg_loss - shared().avg_loss).max())
        tf, ts = timed(full, a.reps), timed(shared, a.reps)
        r = statistics.median(ts) / statistics.median(tf)
        plen = np.mean(es.starts); slen = np.mean([len(s) for s in es.seqs])
        print(f"{name} ({what}): forget set {len(es.seqs)} sequences, prompt {plen:.1f} of {slen:.1f} tokens")
        print(f"  forget scoring  full {spread(tf)} s   shared prompts {spread(ts)} s   ratio of medians {r:.2f}   max |dNLL| {d:.1e}")
        ds = QADataset([dict(r) for r in load_tofu("forget01", STUDY_SOURCE)], tok, tpl)
        b = QACollator(pad, "right", True)([ds[i] for i in range(8)]); b.pop("index", None)
        m.train(); opt = torch.optim.AdamW(m.parameters(), lr=0.0)     # lr 0: the weights stay put between reps
        def step(fn):
            def go():
                nll, mask = fn(); loss = nll.sum() / mask.sum(); opt.zero_grad(); loss.backward(); opt.step(); return float(loss.detach())
            return go
        f_full = step(lambda: token_nll(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]))
        f_ans = step(lambda: model_nll(m, b))
        dl = abs(f_full() - f_ans())
        t1, t2 = timed(f_full, a.reps), timed(f_ans, a.reps)
        r = statistics.median(t2) / statistics.median(t1)
        print(f"  training step   full logits {spread(t1, 1e3, '.1f')} ms   answer-only {spread(t2, 1e3, '.1f')} ms   ratio of medians {r:.2f}   |dloss| {dl:.1e}")
        m.eval()


if __name__ == "__main__":
    main()
