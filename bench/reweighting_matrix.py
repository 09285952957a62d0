"""Every objective × reweighting cell through `unlearn_loss` on one device: loss, backward, weights on the device.

    python bench/reweighting_matrix.py [--device cuda] [--dtype bfloat16] [--steps 2] [--variants full,lora,lora_4bit] [--out matrix.json]

Cells: mean, DV softmin, DV softmax, DV forget_set (sequence unit), DV over tokens (the reference DrSatImp), DV of
one number (the reference DrWGA) and group, for each of the 7 objectives, on a small random Llama. Each cell runs
`--steps` forward/backward passes and records the step time, the peak device memory (CUDA; None on CPU), whether
every loss and gradient is finite and whether the returned weights live on the model's device. Variants: `full` (all
weights trained), `lora` (LoRA adapters on q/v, `models.load_model(lora=...)`), `lora_4bit` (the same on a 4-bit NF4
base: needs bitsandbytes and CUDA, otherwise every cell is recorded as skipped with the reason). Objective × cell pairs
that do not exist (the token-level DV cells for NPO/SimNPO, whose losses are per sequence) are recorded as skipped
too, so `--out` holds one JSON record per variant × objective × cell; it is rewritten after every cell (a timeout
keeps what ran). Exit status 1 if any cell that ran fails.
The GPU check (bench/gpu_check.sh) runs it on CUDA in bf16, its dry mode on CPU (tests/test_gpu_check_dry.py);
tests/test_reference_trainers.py runs `run()` on CPU.
"""
import argparse, importlib.util, json, os, sys, tempfile, time

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


VARIANTS = ("full", "lora", "lora_4bit")
LORA = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def variant_unavailable(variant: str, device: str):
    "Why `variant` cannot run here (None when it can)."
    if variant != "lora_4bit": return None
    if importlib.util.find_spec("bitsandbytes") is None: return "bitsandbytes is not importable"
    if not (torch.device(device).type == "cuda" and torch.cuda.is_available()): return "4-bit needs CUDA"
    try: import bitsandbytes  # noqa: F401  (an install without its CUDA library fails here)
    except Exception as e: return f"import bitsandbytes failed: {type(e).__name__}: {e}"
    return None


def _model(cfg, dev, dt, variant, dtype):
    "The random Llama for `variant`: built in place (`full`), or saved and reloaded through models.load_model with LoRA."
    model = LlamaForCausalLM(cfg).to(dtype=dt)
    if variant == "full": return model.to(dev)
    from baldro_nb.models import load_model
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        if variant == "lora": return load_model(d, dtype=dtype, lora=LORA).to(dev)
        return load_model(d, dtype=dtype, lora=LORA, load_in_4bit=True, device=str(dev))   # placed by device_map


def cells(objectives=None):
    "`(objective, cell, applies)` for every objective × cell of the matrix."
    return [(o, c, only is None or o in only) for o in (objectives or OBJECTIVES) for c, (_, only) in CELLS.items()]


def run(device: str = "cpu", dtype: str = "float32", steps: int = 2, hidden: int = 64, batch: int = 4,
        variant: str = "full", all_cells: bool = False, sink=None) -> list[dict]:
    """The matrix for one variant: a row per applicable cell (`all_cells`: also a `skipped` row for the others, and
    for every cell when the variant cannot run here). `sink(row)` is called after every cell."""
    dev, dt = torch.device(device), getattr(torch, dtype)
    base = dict(variant=variant, device=str(dev), dtype=dtype)
    rows, emit = [], (lambda r: (rows.append(r), sink and sink(r)))
    why = variant_unavailable(variant, device)
    if why is not None:
        print(f"SKIP variant {variant}: {why}")
        for obj, cell, _ in cells(): emit(dict(objective=obj, cell=cell, **base, ok=None, skipped=why))
        return rows
    from baldro_nb.masks import fast_attention_masks
    fast_attention_masks()   # vmap-free masks, as the experiment notebooks use (transformers' own are slow on CPU)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = _model(cfg, dev, dt, variant, dtype)
    forget, retain = items(8, 0, 0, 128), items(8, 1, 100, 128)
    col = QACollator(0)
    cache = RefCache.build(model, forget, col)
    pairs = ForgetRetainDataset(forget, retain, seed=0)
    b = col([pairs[i] for i in range(batch)])
    f = {k: v.to(dev) for k, v in b["forget"].items()}; r = {k: v.to(dev) for k, v in b["retain"].items()}
    on_dev = lambda t: t.device.type == dev.type   # torch.device("cuda:0") != torch.device("cuda")
    for obj in OBJECTIVES:
        for cell, (kw, only) in CELLS.items():
            if only is not None and obj not in only:
                if all_cells: emit(dict(objective=obj, cell=cell, **base, ok=None,
                                        skipped=f"n/a: {obj} has per-sequence losses only (this cell weighs tokens)"))
                continue
            row = dict(objective=obj, cell=cell, **base)
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
                ok &= any(p.grad is not None for p in model.parameters())   # something was trained
                w = rw(m.objective_fn()(*_nll(model, f), cache.forget_logp(f, _nll(model, f)[1]) if m.needs_ref else None), f["index"].tolist())
                row.update(ok=ok, weights_on_device=on_dev(w.weights) and on_dev(w.loss),
                           step_ms=round(1000 * sorted(times)[len(times) // 2], 2),
                           peak_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None)
            except Exception as e:   # a cell that raises is a failed cell, the matrix goes on
                row.update(ok=False, weights_on_device=False, error=f"{type(e).__name__}: {e}")
            emit(row)
    return rows


def _nll(model, f):
    from baldro_nb.objectives import token_nll
    with torch.no_grad(): return token_nll(model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32"); ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64); ap.add_argument("--out", default=None)
    ap.add_argument("--variants", default="full", help=f"comma-separated subset of {','.join(VARIANTS)}")
    a = ap.parse_args()
    if a.device == "cpu" and not os.environ.get("OMP_NUM_THREADS"): torch.set_num_threads(1)   # tiny matmuls: threads only contend
    variants = a.variants.split(",")
    assert set(variants) <= set(VARIANTS), f"unknown variants {set(variants) - set(VARIANTS)}; use {VARIANTS}"
    rows = []
    def sink(r):
        rows.append(r); print(json.dumps(r), flush=True)
        if a.out:   # rewritten after every cell, atomically: a timeout keeps what ran
            with open(a.out + ".tmp", "w") as f: f.write(json.dumps(rows, indent=1))
            os.replace(a.out + ".tmp", a.out)
    for v in variants: run(a.device, a.dtype, a.steps, a.hidden, variant=v, all_cells=True, sink=sink)
    ran = [x for x in rows if not x.get("skipped")]
    bad = [x for x in ran if not (x["ok"] and x["weights_on_device"])]
    print(f"{len(ran) - len(bad)} passed, {len(bad)} failed, {len(rows) - len(ran)} skipped (variant unavailable or n/a)")
    sys.exit(1 if bad else 0)
