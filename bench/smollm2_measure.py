"""Measure SmolLM2-135M-Instruct's target/retain pair on TOFU-mini:10 (issue 24, item 2): greedy exact match (and
"contains": the reference answer inside the greedy answer, case-insensitive) on forget01, retain99 and the two
utility sets for the base (pretrained, before finetuning), target and retain models; the forget set's mean
log10 P(perturbed)/P(paraphrased) (the tiny models' indifference measure, tests/test_tiny_models.py); and the CPU time
of one evaluation point (miniature.eval_point: forget-only scoring) and one utility point (miniature.utility_point).
Waits for the finetunes (ensure_finetuned blocks on their build lock). One thread unless argv[1] says otherwise.
Usage: python bench/smollm2_measure.py [threads]  -> one JSON line per model, then the timing line."""
import json, os, resource, sys, time
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
import numpy as np, torch
torch.set_num_threads(threads)
from baldro_nb.core import set_offline
from baldro_nb.data import load_tofu
from baldro_nb.evaluation import evaluate_tofu
from baldro_nb.finetune import SMOL_SOURCE, ensure_finetuned, greedy_answers, _trained_mask_pad
from baldro_nb.miniature import eval_point, utility_point
from baldro_nb.models import get_spec, load_model, load_tokenizer, resolve_model_path
set_offline()
NAME = "SmolLM2-135M-Instruct"; spec = get_spec(NAME)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
SPLITS = {"forget01": 1, "retain99": 4, "real_authors_perturbed": 1, "world_facts_perturbed": 1}   # split: stride

def log10_tr(m, tok):
    logs, _ = evaluate_tofu(m, tok, spec.template, source=SMOL_SOURCE, sets=("forget",), generate=False)
    vals = lambda k, f: [v[f] for v in logs[k]["value_by_index"].values()]
    para = np.array(vals("forget_Q_A_PARA_Prob", "avg_loss")); pert = np.array(vals("forget_Q_A_PERT_Prob", "avg_loss")).mean(1)
    return (para - pert) / np.log(10)

folders = {}
for label, stage in (("base", None), ("target", "full"), ("retain", "retain99")):   # the base first, while the finetunes run
    d = folders[label] = resolve_model_path(NAME) if stage is None else str(ensure_finetuned(NAME, stage, 0, SMOL_SOURCE))
    tok, m = load_tokenizer(d, spec), load_model(d, fast_masks=True)
    row = {"model": label, "folder": d, "load": os.getloadavg()}
    t0, c0 = time.time(), cpu()
    for split, stride in SPLITS.items():
        rs = list(load_tofu(split, SMOL_SOURCE))[::stride]
        pred = greedy_answers(m, tok, spec.template, [r["question"] for r in rs], max_new_tokens=48,
                              mask_pad_tokens=_trained_mask_pad(d))
        row[f"em_{split}"] = round(100 * np.mean([p.strip() == r["answer"].strip() for p, r in zip(pred, rs)]), 1)
        row[f"contains_{split}"] = round(100 * np.mean([r["answer"].strip().lower() in p.lower() for p, r in zip(pred, rs)]), 1)
        row[f"n_{split}"] = len(rs); row[f"examples_{split}"] = [(r["question"], r["answer"], p) for p, r in zip(pred[:3], rs[:3])]
    row["generate_s"], row["generate_cpu_s"] = round(time.time() - t0, 1), round(cpu() - c0, 1)
    x = log10_tr(m, tok)
    row["forget_log10_pert_over_para_mean"] = round(float(x.mean()), 4); row["forget_log10_sd"] = round(float(x.std(ddof=1)), 4)
    print(json.dumps(row), flush=True)
# the CPU time of one evaluation point and one utility point, on the target
tok, m = load_tokenizer(folders["target"], spec), load_model(folders["target"], fast_masks=True)
retain_tr = [1.0] * 40
t0, c0 = time.time(), cpu(); out, _ = eval_point(m, tok, spec.template, SMOL_SOURCE, "forget01", retain_tr)
ev = (round(time.time() - t0, 1), round(cpu() - c0, 1))
t0, c0 = time.time(), cpu(); mu = utility_point(m, tok, spec.template, SMOL_SOURCE, "forget01")
ut = (round(time.time() - t0, 1), round(cpu() - c0, 1))
print(json.dumps({"timing": True, "threads": threads, "load": os.getloadavg(), "eval_point_wall_s": ev[0], "eval_point_cpu_s": ev[1],
                  "utility_point_wall_s": ut[0], "utility_point_cpu_s": ut[1], "target_model_utility": mu,
                  "target_forget_log10_tr": out["forget_log10_tr"]}), flush=True)
