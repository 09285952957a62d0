"""What the pinned CPU arithmetic costs, and that each of its settings changes the bits on this CPU.

    python bench/bench_arithmetic.py [--reps 5] [--steps 20] [--model tiny-llama]

Each setting runs in a fresh process (the caps are read when torch, MKL and numpy start): `--steps` AdamW training
steps (batch 8 x 64 tokens) of a random model of the tiny model's architecture, then one numpy pass (exp, log, tanh,
sum over 10^6 doubles), one thread. Settings:

- native: nothing set (each library picks the CPU's widest kernels);
- pinned: `core.arithmetic_env()` (what every run gets);
- pinned minus one variable, for each of them: does that variable change the bits here?

Prints, per setting, the sha256 prefix of the trained weights and of the numpy results, and the training time as
median [min-max] over `--reps` processes (interleaved), then the pinned/native ratio of medians. Asserts nothing.
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys

CHILD = r'''
import hashlib, json, sys, time
import numpy as np, torch
from transformers import AutoModelForCausalLM
from baldro_nb.models import get_spec, _tiny_config
from baldro_nb.core import arithmetic_state
class _Tok:   # what _tiny_config reads of a tokenizer
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
    def __len__(self): return 3000
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(_tiny_config(get_spec(sys.argv[1]), _Tok()))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3); x = torch.randint(0, 3000, (8, 64))
t0 = time.perf_counter()
for _ in range(int(sys.argv[2])):
    m(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
dt = time.perf_counter() - t0
w = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()[:12]
a = np.random.default_rng(0).random(1_000_000)
n = hashlib.sha256(np.exp(a).tobytes() + np.log(a).tobytes() + np.tanh(a).tobytes() + a.sum().tobytes()).hexdigest()[:12]
print(json.dumps({"weights": w, "numpy": n, "s": dt, "capability": arithmetic_state()["torch_capability"]}))
'''


def run(env: dict, model: str, steps: int) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ARITHMETIC_VARS}
    r = subprocess.run([sys.executable, "-c", CHILD, model, str(steps)], env={**base, **env}, capture_output=True, text=True)
    if r.returncode: raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    from baldro_nb.core import arithmetic_env, cpu_info, ARITHMETIC_VARS, PINNED_ARITHMETIC
    ap = argparse.ArgumentParser(); ap.add_argument("--reps", type=int, default=5); ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", default="tiny-llama"); a = ap.parse_args()
    pinned = arithmetic_env(1); native = arithmetic_env(1, pinned=False)
    cpu = cpu_info(); print(f"CPU: {cpu['vendor']} {cpu['model']}; AVX-512: {'avx512f' in cpu['simd']}; model: {a.model}, {a.steps} steps")
    settings = {"native": native, "pinned": pinned,
                **{f"pinned without {k}": {kk: v for kk, v in pinned.items() if kk != k} for k in PINNED_ARITHMETIC}}
    times = {k: [] for k in ("native", "pinned")}
    for i in range(a.reps):   # interleaved: the machine's load falls on both alike
        for k in times: times[k].append(run(settings[k], a.model, a.steps)["s"])
    ref = run(pinned, a.model, a.steps)
    for name, env in settings.items():
        r = ref if name == "pinned" else run(env, a.model, a.steps)
        same = "same bits as pinned" if (r["weights"], r["numpy"]) == (ref["weights"], ref["numpy"]) else \
               ("other weights" if r["weights"] != ref["weights"] else "") + (" other numpy" if r["numpy"] != ref["numpy"] else "")
        print(f"{name:45s} torch {r['capability']:8s} weights {r['weights']} numpy {r['numpy']}  {same}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items(): print(f"{k:7s} training: {med[k]:.3f} s [{min(v):.3f}-{max(v):.3f}] over {a.reps} processes")
    print(f"pinned / native: {med['pinned'] / med['native']:.3f}")
