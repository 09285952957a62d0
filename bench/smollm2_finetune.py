"""Build (or reuse) SmolLM2-135M-Instruct's target (`full`) or retain (`retain99`) finetune on TOFU-mini:10 and print
its training time. One thread by default (OMP_NUM_THREADS), pinned arithmetic from the caller's environment.
Usage: python bench/smollm2_finetune.py full|retain99 [threads]"""
import json, os, sys, time
stage = sys.argv[1]; threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
import torch; torch.set_num_threads(threads)
from baldro_nb.core import set_offline, read_json
from baldro_nb.finetune import ensure_finetuned, SMOL_SOURCE
set_offline()
t0 = time.time(); d = ensure_finetuned("SmolLM2-135M-Instruct", stage, 0, SMOL_SOURCE)
info = read_json(d/"training_args.json")["finetune"]
print(json.dumps(dict(folder=str(d), wall_s=round(time.time() - t0, 1), threads=threads, load=os.getloadavg(), **info)))
