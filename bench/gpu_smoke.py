#!/usr/bin/env python
"""GPU smoke check for the real study, with no network and no checkpoint download.

Builds a random-initialised model with a real architecture's config (default: Llama-3.2-1B-sized) in bf16, runs a
few unlearning steps (NPO with a retain term, the study's default) with the cached reference and with the live
reference, then one evaluation batch (scoring + greedy generation). Prints step time, tokens/s and peak GPU memory
for each phase. Fits one 10-minute call on one H100.

    python bench/gpu_smoke.py                       # Llama-3.2-1B-sized, on the GPU
    python bench/gpu_smoke.py --arch tiny --device cpu --steps 2   # the CPU test configuration
    python bench/gpu_smoke.py --arch llama-3.1-8b --batch 1 --grad-ckpt   # an 8B-sized model
    python bench/gpu_smoke.py --arch smollm2-135m --batch 4   # SmolLM2-135M's shape (the real weights, 98 MB, exceed
                                                              # what the GPU check can carry: 64 MiB)
"""
from __future__ import annotations
import argparse, json, statistics, time

import torch

ARCHS = {  # hidden sizes etc. of the real models' published configs; vocab sizes too (the embedding dominates 1B)
    "tiny": dict(kind="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "smollm2-135m": dict(kind="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0, tie_word_embeddings=True),
    "llama-3.2-1b": dict(kind="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0, tie_word_embeddings=True),
    "llama-3.1-8b": dict(kind="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0),
    "llama-2-7b": dict(kind="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32),
    "qwen3-8b": dict(kind="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0),
    "mistral-7b": dict(kind="mistral", vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, rope_theta=1000000.0),
}


def build(arch: str, device: str, dtype, attn: str, grad_ckpt: bool):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM, MistralConfig, MistralForCausalLM
    cfg = dict(ARCHS[arch]); kind = cfg.pop("kind")
    C, M = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM)}[kind]
    config = C(**cfg, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device): model = M(config).to(dtype)
    if grad_ckpt: model.gradient_checkpointing_enable(); model.config.use_cache = False
    return model


def fake_items(n: int, vocab: int, prompt_len: int, answer_len: int, seed: int):
    "TOFU-shaped items: random prompt then answer tokens ending in eos, labels masked over the prompt."
    g = torch.Generator().manual_seed(seed); items = []
    for i in range(n):
        a = answer_len - int(torch.randint(0, answer_len // 4 + 1, (1,), generator=g))
        ids = torch.randint(3, vocab, (prompt_len + a,), generator=g); ids[-1] = 2
        labels = ids.clone(); labels[:prompt_len] = -100
        items.append(dict(input_ids=ids.tolist(), labels=labels.tolist(), index=i))
    return items


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="llama-3.2-1b", choices=sorted(ARCHS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="bfloat16 (default on GPU) or float32 (default on CPU)")
    p.add_argument("--attn", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"])
    p.add_argument("--method", default="NPO", help="a method preset (training.resolve_method)")
    p.add_argument("--batch", type=int, default=8, help="forget micro-batch (retain batch is the same)")
    p.add_argument("--prompt-len", type=int, default=96); p.add_argument("--answer-len", type=int, default=48)
    p.add_argument("--steps", type=int, default=6, help="timed steps per reference mode (after 1 warm-up step)")
    p.add_argument("--eval-batch", type=int, default=32); p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--grad-ckpt", action="store_true")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    from baldro_nb.data import QACollator
    from baldro_nb.training import resolve_method, RefCache, LiveRef, unlearn_loss
    from baldro_nb.evaluation import score_sequences

    dev = a.device; cuda = dev.startswith("cuda")
    dtype = getattr(torch, a.dtype or ("bfloat16" if cuda else "float32"))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak = (lambda: torch.cuda.max_memory_allocated() / 2**30) if cuda else (lambda: float("nan"))
    reset = torch.cuda.reset_peak_memory_stats if cuda else (lambda: None)
    t0 = time.time(); model = build(a.arch, dev, dtype, a.attn, a.grad_ckpt); sync()
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    print(f"# {a.arch}: {n_params/1e6:.1f} M parameters, {dtype}, attn={a.attn}, device={dev}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else "") + f", built in {time.time()-t0:.1f} s", flush=True)
    coll = QACollator(pad_token_id=2)
    n_forget = a.batch * (a.steps + 1)
    forget = fake_items(n_forget, vocab, a.prompt_len, a.answer_len, 0)
    retain = fake_items(n_forget, vocab, a.prompt_len, a.answer_len, 1)
    method = resolve_method(a.method); rw = method.make_reweighting()
    to = lambda b: {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in b.items()}
    results = {"arch": a.arch, "params_M": round(n_params / 1e6, 1), "dtype": str(dtype), "device": dev,
               "gpu": torch.cuda.get_device_name(0) if cuda else None, "method": a.method, "batch": a.batch}

    reset(); t = time.time(); cache = RefCache.build(model, forget, coll, batch_size=a.batch); sync()
    results["ref_cache"] = {"seconds": round(time.time() - t, 3), "peak_GiB": round(peak(), 2)}
    print(f"reference cache: {len(forget)} samples in {time.time()-t:.2f} s, peak {peak():.2f} GiB", flush=True)

    for mode in ("cache", "live"):
        ref = cache if mode == "cache" else LiveRef(model)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        model.train(); times, toks = [], 0; reset()
        for s in range(a.steps + 1):
            fb = to(coll(forget[s*a.batch:(s+1)*a.batch])); rb = to(coll(retain[s*a.batch:(s+1)*a.batch]))
            sync(); t = time.time()
            loss, rec = unlearn_loss(model, method, rw, fb, rb, ref=ref, pad_id=2)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); sync()
            if s: times.append(time.time() - t); toks += int(fb["attention_mask"].sum() + rb["attention_mask"].sum())
        med = statistics.median(times)
        results[f"step_{mode}"] = {"median_s": round(med, 4), "tokens_per_s": round(toks / sum(times), 1),
                                   "peak_GiB": round(peak(), 2), "loss": round(rec["loss"], 4)}
        print(f"unlearning step, {mode:5s} reference: median {med*1000:.1f} ms, {toks/sum(times):,.0f} tokens/s, "
              f"peak {peak():.2f} GiB, last loss {rec['loss']:.4f}", flush=True)
        del ref, opt
        if cuda: torch.cuda.empty_cache()
    r = results["step_cache"]["median_s"] / results["step_live"]["median_s"]
    results["cache_over_live"] = round(r, 3); print(f"cached / live step time: {r:.3f}")

    model.eval(); ev = forget[:a.eval_batch]; reset(); sync(); t = time.time()
    sc = score_sequences(model, [e["input_ids"] for e in ev], [a.prompt_len] * len(ev), pad_id=2, batch_size=a.eval_batch)
    sync(); ts = time.time() - t
    prompts = torch.tensor([e["input_ids"][:a.prompt_len] for e in ev], device=dev); t = time.time()
    with torch.no_grad():
        out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                             max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, pad_token_id=2)
    sync(); tg = time.time() - t; new = (out.shape[1] - a.prompt_len) * out.shape[0]
    results["eval"] = {"score_s": round(ts, 3), "generate_s": round(tg, 3), "gen_tokens_per_s": round(new / tg, 1),
                       "peak_GiB": round(peak(), 2), "mean_nll": round(float(sc.avg_loss.mean()), 3)}
    print(f"evaluation batch: scoring {len(ev)} sequences {ts:.2f} s; greedy {new} new tokens {tg:.2f} s "
          f"({new/tg:,.0f} tokens/s), peak {peak():.2f} GiB", flush=True)
    if a.json:
        from baldro_nb.core import write_json
        write_json(a.json, results)
    return results


if __name__ == "__main__":
    main()
