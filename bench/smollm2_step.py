"""CPU time of one SmolLM2-135M-Instruct finetune step as SMALL_RECIPES runs it (batch 8 of TOFU-mini:10's full,
AdamW, the answer-token loss), at 1 and 2 threads: one warm-up step, then `n` timed steps (wall and process CPU).
Usage: python bench/smollm2_step.py [n=3]  -> one JSON line per thread count (with the load average)."""
import json, os, resource, sys, time
n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
import torch
from baldro_nb.core import set_offline
from baldro_nb.data import QADataset
from baldro_nb.finetune import SMOL_SOURCE, _TrainCollator, answer_token_loss, training_rows
from baldro_nb.models import get_spec, load_model, load_tokenizer
set_offline()
NAME = "SmolLM2-135M-Instruct"; spec = get_spec(NAME)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
tok = load_tokenizer(NAME, spec)
ds = QADataset(training_rows("full", SMOL_SOURCE, general=False)[:8 * (n + 1)], tok, spec.template)
coll = _TrainCollator(tok.pad_token_id)
for threads in (1, 2):
    torch.set_num_threads(threads)
    m = load_model(NAME, fast_masks=True); m.train(); opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    walls, cpus = [], []
    for k in range(n + 1):
        b = coll([ds[i] for i in range(8 * k, 8 * k + 8)])
        t0, c0 = time.time(), cpu()
        answer_token_loss(m, b).backward(); opt.step(); opt.zero_grad()
        if k: walls.append(time.time() - t0); cpus.append(cpu() - c0)
    print(json.dumps(dict(threads=threads, steps=n, tokens_per_batch=int(b["input_ids"].numel()), wall_s_per_step=round(sum(walls) / n, 2),
                          cpu_s_per_step=round(sum(cpus) / n, 2), min_wall_s=round(min(walls), 2), load=os.getloadavg())), flush=True)
