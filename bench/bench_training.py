"""Benchmark for 07_training: cached vs live reference (NPO, TNPO), and no-grad vs grad-enabled group ranking.

Run: `python bench/bench_training.py [--reps 7] [--batch 8]`. Prints medians and ratios; asserts nothing about time.

* "reference live" mimics the reference trainers (orig nxZhai/BalDRO `npo.py`, fork `tnpo.py`): the policy forward on
  forget with `labels` (HF computes a full-vocabulary loss that is thrown away), the frozen reference forward on every
  step, a separate retain forward whose HF loss is `NLL_tok`.
* "ours live" = `unlearn_loss` with `LiveRef` (one batched forget+retain forward, no HF loss, reference recomputed).
* "ours cached" = `unlearn_loss` with `RefCache` (reference log-probs looked up by index, a single model).
Each timed step is forward + backward (+ zero_grad), median over `--reps` runs after two warm-ups, one process.
Group: the full GroupNPO micro-batch step with the ranking pass under `torch.no_grad()` (ours) vs with autograd on
and the ranking graph alive until the step ends (the reference's `compute_batch_nll`). Memory = bytes of tensors
that autograd saved for backward during the ranking pass (what no_grad avoids), and the peak of CPU memory
allocated by torch during the step (torch profiler memory events).
"""
from __future__ import annotations
import argparse, os, statistics, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from baldro_nb.data import QACollator
from baldro_nb.objectives import token_nll, seq_stats, npo, tnpo
from baldro_nb.reweighting import select_rows
from baldro_nb.training import resolve_method, unlearn_loss, RefCache, LiveRef


def target_model():
    "The tiny target model if already built (04_finetune; never built here), else a random tiny-llama-shaped model."
    try:
        from baldro_nb.models import load_model, stage_dir
        d = stage_dir("tiny-llama", "full")
        if not (d / "DONE").exists(): raise FileNotFoundError(f"{d} not built (run finetune.ensure_tiny_finetuned)")
        return load_model(str(d)), "tiny-llama/full (finetuned target)"
    except Exception as e:  # not available: same architecture, random weights
        from baldro_nb.models import TINY_ARCH, TINY_VOCAB
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=TINY_VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True, **TINY_ARCH)
        return LlamaForCausalLM(cfg), f"random tiny-llama architecture ({type(e).__name__}: finetuned target not available)"


def items(n, start, g, prompt=20, answer=30):
    out = []
    for i in range(n):
        p = torch.randint(3, 1000, (prompt + int(torch.randint(-4, 5, (1,), generator=g)),), generator=g).tolist()
        a = torch.randint(3, 1000, (answer + int(torch.randint(-8, 9, (1,), generator=g)),), generator=g).tolist() + [1]
        out.append(dict(input_ids=[2] + p + a, labels=[-100] * (1 + len(p)) + a, index=start + i))
    return out


def reference_style_step(model, ref_model, f, r, objective):
    "What the reference trainers do per micro-batch (live reference, separate forwards, HF loss computed)."
    out = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], labels=f["labels"])  # HF loss discarded
    nll, mask = token_nll(out.logits, f["labels"])
    with torch.no_grad():
        rn, _ = token_nll(ref_model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], labels=f["labels"]).logits, f["labels"])
    fl = objective(nll, mask, -rn)
    retain = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], labels=r["labels"]).loss
    return fl.per_sample.mean() + retain


def timed(fns: dict, model, reps):
    "Median step time per variant; variants interleaved in rotating order so machine load hits them alike."
    ts = {k: [] for k in fns}; keys = list(fns)
    for i in range(reps + 2):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            model.zero_grad(set_to_none=True)
            t = time.perf_counter(); loss = fns[k](); loss.backward(); dt = time.perf_counter() - t
            if i >= 2: ts[k].append(dt)
    return {k: statistics.median(v) for k, v in ts.items()}


def saved_bytes(fn):
    "Bytes of tensors autograd saves for backward while `fn` runs."
    tot = [0]
    def pack(t): tot[0] += t.numel() * t.element_size(); return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): fn()
    return tot[0]


def peak_alloc(fn):
    "Peak CPU bytes allocated by torch during `fn` (profiler memory events, running sum)."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof: fn()
    ev = sorted((e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in ev: cur += e.cpu_memory_usage; peak = max(peak, cur)
    return peak


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--reps", type=int, default=9); ap.add_argument("--batch", type=int, default=8); ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)   # 1 by default: on a shared 2-core machine OpenMP spin-waits distort timings
    model, what = target_model(); model.train()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else model.config.eos_token_id
    g = torch.Generator().manual_seed(0); B = a.batch
    forget, retain = items(B, 0, g), items(B, 1000, g)
    col = QACollator(pad); f, r = col(forget), col(retain)
    cache = RefCache.build(model, forget, col); live = LiveRef(model)
    print(f"model: {what}; {sum(p.numel() for p in model.parameters())/1e6:.2f} M params; batch {B} forget + {B} retain, "
          f"~50 tokens each; torch threads {torch.get_num_threads()}; median of {a.reps}")
    for name, obj in (("NPO", lambda n, m, rl: npo(n, m, rl)), ("TNPO", lambda n, m, rl: tnpo(n, m, rl))):
        meth = resolve_method(name); rw = meth.make_reweighting()
        t = timed({"ref": lambda: reference_style_step(model, live.model, f, r, obj),
                   "live": lambda: unlearn_loss(model, meth, rw, f, r, ref=live, pad_id=pad)[0],
                   "cache": lambda: unlearn_loss(model, meth, rw, f, r, ref=cache, pad_id=pad)[0]}, model, a.reps)
        t_ref, t_live, t_cache = t["ref"], t["live"], t["cache"]
        print(f"{name:5s} step: reference-style live {t_ref*1e3:7.1f} ms | ours live {t_live*1e3:7.1f} ms | ours cached {t_cache*1e3:7.1f} ms"
              f" | cached/reference-live = {t_cache/t_ref:.3f} | cached/ours-live = {t_cache/t_live:.3f}")
    # group: ranking without vs with autograd
    meth = resolve_method("GroupNPO"); rw = meth.make_reweighting()
    def rank(grad):
        with torch.set_grad_enabled(grad):
            _, _, lbar = seq_stats(*token_nll(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"]))
        return lbar
    def group_step(grad):
        lbar = rank(grad)                                   # with grad: graph alive until the step returns (as the reference)
        sel = torch.topk(-lbar.detach(), rw.k(B)).indices.sort().values.tolist()
        fs, rs = select_rows(f, sel), select_rows(r, sel)
        nll, mask = token_nll(model(input_ids=fs["input_ids"], attention_mask=fs["attention_mask"]).logits, fs["labels"])
        loss = npo(nll, mask, cache.forget_logp(fs, mask)).per_sample.mean() + model(**{k: rs[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        return loss + 0 * lbar.sum() if grad else loss      # keep the ranking graph referenced until backward
    t = timed({"ng": lambda: group_step(False), "g": lambda: group_step(True)}, model, a.reps); t_ng, t_g = t["ng"], t["g"]
    sb_ng, sb_g = saved_bytes(lambda: rank(False)), saved_bytes(lambda: rank(True))
    def full(grad): model.zero_grad(set_to_none=True); group_step(grad).backward()
    pk = {gr: peak_alloc(lambda: full(gr)) for gr in (False, True)}   # deterministic: one run each
    print(f"Group step (k={rw.k(B)} of {B}): no-grad ranking {t_ng*1e3:.1f} ms vs grad ranking {t_g*1e3:.1f} ms, ratio {t_ng/t_g:.3f}")
    print(f"  ranking pass autograd-saved tensors: no-grad {sb_ng/2**20:.2f} MiB vs grad {sb_g/2**20:.2f} MiB")
    print(f"  peak torch CPU allocation over the step: no-grad {pk[False]/2**20:.1f} MiB vs grad {pk[True]/2**20:.1f} MiB, ratio {pk[False]/pk[True]:.3f}")


if __name__ == "__main__":
    main()
