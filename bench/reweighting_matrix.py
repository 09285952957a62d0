"""Every objective × reweighting cell through `unlearn_loss` on one device: loss, backward, weights on the device.

    python bench/reweighting_matrix.py [--device cuda] [--dtype bfloat16] [--steps 2] [--out matrix.json]

Cells: mean, DV softmin, DV softmax, DV forget_set (sequence unit), DV over tokens (the reference DrSatImp), DV of
one number (the reference DrWGA) and group, for each of the 7 objectives, on a small random Llama. Each cell runs
`--steps` forward/backward passes and records the step time, the peak device memory, whether every loss and
gradient is finite and whether the returned weights live on the model's device. Exit status 1 if any cell fails.
The GPU check (bench/gpu_check.sh) runs it on CUDA in bf16; tests/test_reference_trainers.py runs it on CPU.
"""
import argparse, json, sys, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from baldro_nb.data import QACollator
from baldro_nb.objectives import OBJECTIVES
from baldro_nb.training import ForgetRetainDataset, RefCache, initial_losses, resolve_method, unlearn_loss

CELLS = {   # name -> (resolve_method keywords, objectives it applies to; None = all)
    "mean": (dict(reweighting="mean"), None),
    "dv_softmin": (dict(reweighting="dv", direction="softmin", beta_dv=1.0), None),
    "dv_softmax": (dict(reweighting="dv", direction="softmax", beta_dv=1.0), None),
    "dv_forget_set": (dict(reweighting="dv", pool="forget_set", beta_dv=1.0), None),
    "dv_token": (dict(reweighting="dv", unit="token", beta_dv=1.0), ("grad_ascent", "grad_diff", "satimp", "wga", "tnpo")),
    "dv_scalar": (dict(reweighting="dv", unit="scalar", beta_dv=2.0), ("grad_ascent", "grad_diff", "satimp", "wga", "tnpo")),
    "group": (dict(reweighting="group", ratio=0.5), None),
}


def items(n, seed, start, vocab):
    g = torch.Generator().manual_seed(seed); out = []
    for i in range(n):
        q = torch.randint(3, vocab, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g).tolist()
        a = torch.randint(3, vocab, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist() + [1]
        out.append(dict(input_ids=[2] + q + a, labels=[-100] * (1 + len(q)) + a, index=start + i))
    return out


def run(device: str = "cpu", dtype: str = "float32", steps: int = 2, hidden: int = 64, batch: int = 4) -> list[dict]:
    dev, dt = torch.device(device), getattr(torch, dtype)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = LlamaForCausalLM(cfg).to(device=dev, dtype=dt)
    forget, retain = items(8, 0, 0, 128), items(8, 1, 100, 128)
    col = QACollator(0)
    cache = RefCache.build(model, forget, col)
    pairs = ForgetRetainDataset(forget, retain, seed=0)
    b = col([pairs[i] for i in range(batch)])
    f = {k: v.to(dev) for k, v in b["forget"].items()}; r = {k: v.to(dev) for k, v in b["retain"].items()}
    rows = []
    for obj in OBJECTIVES:
        for cell, (kw, only) in CELLS.items():
            if only is not None and obj not in only: continue
            row = dict(objective=obj, cell=cell, device=str(dev), dtype=dtype)
            try:
                m = resolve_method(objective=obj, **kw); rw = m.make_reweighting()
                if kw.get("pool") == "forget_set":
                    init = initial_losses(cache, m); rw.prefill(list(init), list(init.values()))
                if dev.type == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
                times, ok = [], True
                for _ in range(steps):
                    t = time.perf_counter(); model.zero_grad(set_to_none=True)
                    loss, rec = unlearn_loss(model, m, rw, f, r, ref=cache, pad_id=0, gen=torch.Generator().manual_seed(0))
                    loss.backward()
                    if dev.type == "cuda": torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
                    ok &= bool(torch.isfinite(loss)) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
                w = rw(m.objective_fn()(*_nll(model, f), cache.forget_logp(f, _nll(model, f)[1]) if m.needs_ref else None), f["index"].tolist())
                row.update(ok=ok, weights_on_device=w.weights.device == dev and w.loss.device == dev,
                           step_ms=round(1000 * sorted(times)[len(times) // 2], 2),
                           peak_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None)
            except Exception as e:   # a cell that raises is a failed cell, the matrix goes on
                row.update(ok=False, weights_on_device=False, error=f"{type(e).__name__}: {e}")
            rows.append(row)
    return rows


def _nll(model, f):
    from baldro_nb.objectives import token_nll
    with torch.no_grad(): return token_nll(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32"); ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64); ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = run(a.device, a.dtype, a.steps, a.hidden)
    for x in rows: print(json.dumps(x))
    bad = [x for x in rows if not (x["ok"] and x["weights_on_device"])]
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
    if a.out: open(a.out, "w").write(json.dumps(rows, indent=1))
    sys.exit(1 if bad else 0)
