#!/usr/bin/env python
"""End-to-end GPU check of the tiny study: the finetuned tiny-llama target, the study's evaluation and unlearning.

Mimics nbs/experiments/unlearn.ipynb with the settings of params/study_tiny.yaml (forget01, data_source
"tofu-mini:40", eval_rows None, max_new_tokens 64, eval batch 32; lr 3e-3, batch 4 x grad-accum 2, 2 epochs):

  (a) `evaluate_tofu` of the target in float32/eager on the CPU (the study's setting) and on `--device`, plus once in
      bfloat16/sdpa on `--device`; prints the largest absolute difference of the summary metrics and of the per-sample
      average losses, and how many greedy generations are identical;
  (b) `unlearn` on `--device` for NPO and BalDRO-DV+NPO in bfloat16/sdpa (the GPU setting) and in float32/eager (the
      study's setting, compared with the study's CPU run when `--reference` holds it), each evaluated at epochs 0, 1, 2;
      checks that the forget loss of every step in steps.jsonl is finite and that the forget Q_A_Prob after training
      is below the target's;
  (c) times every part. Writes a JSON summary to `--json`.

Data and models come from `$BALDRO_OUTPUTS` (or `--outputs`): outputs/models/<model>/full, outputs/retain_logs/..., and
the TOFU-mini folder outputs/data/tofu_mini_v<TOFU_MINI_VERSION>_seed0_a40_q20 (found by `resolve_source`, so Faker is never called).

    python bench/gpu_tiny_e2e.py --device cpu --json /tmp/e2e.json          # the CPU test of this script
    BALDRO_OUTPUTS=.gpudata/outputs python3 bench/gpu_tiny_e2e.py --json $OUT/gpu_e2e.json --reference .gpudata/reference.json
"""
from __future__ import annotations
import argparse, importlib, importlib.util, json, math, os, sys, time, traceback
from pathlib import Path

T_START = time.time()


def log(*a):
    print(f"[{time.time() - T_START:7.1f}s]", *a, flush=True)


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for m in ("torch", "transformers", "tokenizers", "huggingface_hub", "datasets", "accelerate", "peft", "numpy",
              "pandas", "pyarrow", "fsspec", "dill", "multiprocess", "nltk", "rouge_score", "safetensors"):
        try:
            mod = importlib.import_module(m)
            out[m] = f"{getattr(mod, '__version__', '?')} @ {Path(mod.__file__).parent}"
        except Exception as e:  # noqa: BLE001 -- report, do not stop
            out[m] = f"IMPORT FAILED: {type(e).__name__}: {e}"
    return out


def flat_losses(logs: dict) -> dict:
    "{key: [avg_loss, ...]} of every per-sample probability entry of a TOFU_EVAL log."
    out = {}
    for k, v in logs.items():
        if not (isinstance(v, dict) and isinstance(v.get("value_by_index"), dict)): continue
        vals = []
        for i in sorted(v["value_by_index"], key=int):
            e = v["value_by_index"][i]
            if isinstance(e, dict) and "avg_loss" in e:
                x = e["avg_loss"]; vals.extend(x if isinstance(x, list) else [x])
        if vals: out[k] = vals
    return out


def generations(logs: dict) -> dict:
    return {k: [v["value_by_index"][i]["generation"] for i in sorted(v["value_by_index"], key=int)]
            for k, v in logs.items() if k.endswith("_Q_A_ROUGE")}


def compare(a_logs, a_sum, b_logs, b_sum) -> dict:
    "Differences between two evaluations (b minus a)."
    keys = sorted(set(a_sum) & set(b_sum))
    d = {k: b_sum[k] - a_sum[k] for k in keys if isinstance(a_sum[k], (int, float)) and isinstance(b_sum[k], (int, float))}
    la, lb = flat_losses(a_logs), flat_losses(b_logs)
    per = {k: max(abs(x - y) for x, y in zip(la[k], lb[k])) for k in la if k in lb and len(la[k]) == len(lb[k])}
    ga, gb = generations(a_logs), generations(b_logs)
    same = {k: f"{sum(x == y for x, y in zip(ga[k], gb[k]))}/{len(ga[k])}" for k in ga if k in gb}
    nog = {k: v for k, v in d.items() if not k.startswith("gibberish")}
    return {"summary_diff": d, "max_abs_summary_diff": max((abs(v) for v in nog.values()), default=None),
            "max_abs_summary_diff_key": max(nog, key=lambda k: abs(nog[k])) if nog else None,
            "max_abs_avg_loss_diff": max(per.values(), default=None),
            "max_abs_avg_loss_diff_key": max(per, key=per.get) if per else None,
            "identical_generations": same}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--outputs", default=None, help="the outputs/ copy to use (sets BALDRO_OUTPUTS)")
    p.add_argument("--work", default="/tmp/gpu_tiny_e2e", help="scratch folder for the run folders (not $OUT)")
    p.add_argument("--json", default=None, help="write the summary here")
    p.add_argument("--reference", default=None, help="JSON of the study's stored CPU results (.gpudata/reference.json)")
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--methods", default="NPO,BalDRO-DV+NPO")
    p.add_argument("--unlearn-settings", default="bfloat16/sdpa,float32/eager",
                   help="comma-separated dtype/attn pairs of the unlearning runs")
    p.add_argument("--gibberish", default="auto", choices=["auto", "const", "offline"],
                   help="auto: the offline scorer when wordfreq is importable, else a constant 0.5 (no wordfreq)")
    p.add_argument("--rows", default="auto", choices=["auto", "datasets", "jsonl"],
                   help="how TOFU rows are read: datasets (load_tofu, the study's way), jsonl (the TOFU-mini files read "
                        "directly, passed as an in-memory source); auto: datasets, or jsonl if `import datasets` fails")
    p.add_argument("--skip-eval-compare", action="store_true")
    a = p.parse_args(argv)

    if a.outputs: os.environ["BALDRO_OUTPUTS"] = str(Path(a.outputs).resolve())
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
    import numpy as np, torch
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.startswith("cuda")
    res = {"device": dev, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "versions": versions(), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "checks": {}, "errors": [], "warnings": [],
           "timings_s": {}}
    log("versions:", json.dumps(res["versions"], indent=1))
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    import transformers
    transformers.logging.set_verbosity_error()
    from baldro_nb.core import set_offline, seed_everything, outputs_dir, read_json, check
    set_offline()
    import baldro_nb.evaluation as E, baldro_nb.gibberish as G
    from baldro_nb.data import load_tofu, QADataset, split_pairing, resolve_source
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    from baldro_nb.training import resolve_method, training_preset, unlearn
    from baldro_nb.evaluation import evaluate_tofu, TofuEvalCallback, eval_source
    from baldro_nb.vocab import retain_stage, retain_log_rel, method_label

    # -- gibberish: the offline scorer needs wordfreq (~56 MB, not carried to the GPU machine) -----------------------
    gmode = a.gibberish
    if gmode == "auto": gmode = "offline" if importlib.util.find_spec("wordfreq") else "const"
    if gmode == "const":
        def _const_scores(texts, scorer="offline"):
            return np.full(len(list(texts)), 0.5), "constant-0.5 (gpu_tiny_e2e: wordfreq not available)"
        E.gibberish_scores = _const_scores
        G.offline_gibberish_scores = lambda texts: np.full(len(list(texts)), 0.5)
        log("NOTE: gibberish scorer monkeypatched to a constant 0.5 (baldro_nb.evaluation.gibberish_scores and "
            "baldro_nb.gibberish.offline_gibberish_scores): gibberish_clean_prob / gibberish_rate below are NOT real.")
    res["gibberish"] = gmode
    real = lambda k: gmode != "const" or not k.startswith("gibberish")   # metrics that are not the constant stand-in

    # -- the study's settings (params/study_tiny.yaml x nbs/experiments/unlearn.ipynb) -------------------------------
    model, forget_split, data_source, eval_rows, max_new_tokens, eval_batch_size = a.model, "forget01", "tofu-mini:40", None, 64, 32
    compat, seed, optim = "corrected", 0, "adamw_torch"
    sched = training_preset("fork_fast"); sched.update(lr=3e-3, epochs=2, batch_size=4, grad_accum=2)
    seed_everything(seed)
    spec = get_spec(model)
    target = str(outputs_dir()/"models"/model/"full")
    retain_path = str(outputs_dir()/retain_log_rel(model, forget_split))
    check(Path(retain_path).exists(), f"retain log {retain_path} does not exist.")
    res["settings"] = dict(model=model, target=target, retain_log=retain_path, data=resolve_source(data_source),
                           forget_split=forget_split, data_source=data_source, eval_rows=eval_rows,
                           max_new_tokens=max_new_tokens, eval_batch_size=eval_batch_size, schedule=sched, compat=compat)
    log("settings:", json.dumps(res["settings"]))
    rows_mode = a.rows
    if rows_mode == "auto":
        try: import datasets; rows_mode = "datasets"   # noqa: F401
        except Exception as e:  # noqa: BLE001
            rows_mode = "jsonl"; res["warnings"].append(f"import datasets failed ({type(e).__name__}: {e}): rows read from jsonl")
            log(f"WARNING: import datasets failed ({type(e).__name__}: {e}); FALLBACK: TOFU rows read from the jsonl files")
    res["rows"] = rows_mode
    def rows_of(config):
        if rows_mode == "datasets": return [dict(r) for r in load_tofu(config, data_source)]
        f = Path(resolve_source(data_source))/f"{config}.jsonl"
        return [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    t = time.time()
    tok = load_tokenizer(target, spec); template = spec.template
    forget_rows = rows_of(forget_split)
    retain_rows = rows_of(split_pairing(forget_split)[0])
    forget_ds = QADataset(forget_rows, tok, template); retain_ds = QADataset(retain_rows, tok, template)
    res["timings_s"]["data"] = round(time.time() - t, 2)
    log(f"model {model}: forget {len(forget_ds)} QA, retain {len(retain_ds)} QA ({res['timings_s']['data']} s)")
    src = (eval_source(forget_split, data_source, eval_rows) if rows_mode == "datasets"
           else {cfg: rows_of(cfg) for cfg in E.eval_sets(forget_split).values()})
    eval_kw = dict(source=src, forget_split=forget_split,
                   retain_logs=retain_path, batch_size=eval_batch_size, max_new_tokens=max_new_tokens)
    ref = json.loads(Path(a.reference).read_text()) if a.reference and Path(a.reference).exists() else None
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)

    def timed_eval(name, m):
        if cuda: torch.cuda.reset_peak_memory_stats()
        st = {}; sync(); t = time.time()
        logs, s = evaluate_tofu(m, tok, template, out_dir=work/f"eval_{name}", stats=st, **eval_kw)
        sync(); sec = round(time.time() - t, 2)
        res["timings_s"][f"eval_{name}"] = sec
        log(f"eval {name}: {sec} s (score {st.get('score_s', 0):.2f} s, generate {st.get('generate_s', 0):.2f} s): "
            + json.dumps({k: round(v, 5) for k, v in s.items()}))
        return logs, s

    # -- (a) evaluation: CPU fp32 vs device fp32 (and device bf16) ---------------------------------------------------
    target_summary = None
    if not a.skip_eval_compare:
        try:
            t = time.time(); m_cpu = load_model(target, dtype="float32", attn_implementation="eager", device="cpu")
            cpu_logs, cpu_s = timed_eval("cpu_fp32_eager", m_cpu); del m_cpu
            target_summary = cpu_s
            res["eval"] = {"cpu_fp32_eager": cpu_s}
            if ref and "target_eval_epoch0" in ref:
                r0 = ref["target_eval_epoch0"]
                res["eval"]["cpu_vs_study_reference"] = {k: cpu_s[k] - r0[k] for k in cpu_s if k in r0 and real(k)}
                log("this CPU vs the study's stored epoch-0 evaluation (informational):",
                    json.dumps({k: f"{v:+.2e}" for k, v in res['eval']['cpu_vs_study_reference'].items()}))
            for dt, attn in (("float32", "eager"), ("bfloat16", "sdpa")):
                name = f"{'cpu2' if dev == 'cpu' else dev.split(':')[0]}_{'fp32' if dt == 'float32' else 'bf16'}_{attn}"
                m = load_model(target, dtype=dt, attn_implementation=attn, device=dev)
                logs, s = timed_eval(name, m); del m
                if cuda: res["eval"].setdefault("peak_GiB", {})[name] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                c = compare(cpu_logs, cpu_s, logs, s)
                c["summary_diff"] = {k: v for k, v in c["summary_diff"].items() if real(k)}
                res["eval"][name] = s; res["eval"][f"{name}_vs_cpu_fp32_eager"] = c
                log(f"{name} vs cpu_fp32_eager: largest |summary diff| {c['max_abs_summary_diff']:.3g} "
                    f"({c['max_abs_summary_diff_key']}), largest |per-sample avg_loss diff| {c['max_abs_avg_loss_diff']:.3g} "
                    f"({c['max_abs_avg_loss_diff_key']}), identical generations {c['identical_generations']}")
                log("  per-metric diffs:", json.dumps({k: f"{v:+.2e}" for k, v in c["summary_diff"].items()}))
                if dt == "float32":
                    dev_fp32_logs = logs
                    res["checks"]["eval_fp32_device_vs_cpu_max_summary_diff_lt_1e-3"] = bool(c["max_abs_summary_diff"] < 1e-3)
            if cuda:   # the forget generations on the GPU, so that the real gibberish scorer can be run on them later
                res["eval"]["forget_generations_device_fp32"] = generations(dev_fp32_logs).get("forget_Q_A_ROUGE")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc(); res["errors"].append(f"eval: {type(e).__name__}: {e}")
        res["timings_s"]["part_a"] = round(time.time() - T_START, 2)

    # -- (b) unlearning on the device ---------------------------------------------------------------------------------
    res["unlearn"] = {}
    t_b = time.time()
    for label in [s.strip() for s in a.methods.split(",") if s.strip()]:
        objective = label.split("+")[-1]; rw = "dv" if label.startswith("BalDRO-DV") else ("group" if label.startswith("BalDRO-G") else "mean")
        for setting in [s.strip() for s in a.unlearn_settings.split(",") if s.strip()]:
            dtype, attn = setting.split("/")
            key = f"{label}|{dtype}/{attn}"
            r = res["unlearn"][key] = {}
            try:
                hp = {}
                if rw == "dv": hp.update(beta_dv=sched.get("beta_dv", 1.0))
                method = resolve_method(objective=objective, reweighting=rw, compat=compat, **hp)
                check(method_label(dict(objective=objective, reweighting=rw)) == label, f"label mismatch for {label}")
                out = work/f"unlearn__{label}__{dtype}_{attn}"
                import shutil; shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
                seed_everything(seed)
                model_ = load_model(target, dtype=dtype, attn_implementation=attn, device=dev)
                n_ep = int(round(sched["epochs"]))
                cb = TofuEvalCallback(tok, template, out, epochs=range(0, n_ep + 1), **eval_kw)
                t = time.time()   # epoch 0 before training, as the notebook's shared epoch-0 cache does
                _, s0 = evaluate_tofu(model_, tok, template, out_dir=out/"evals"/"epoch_0", **eval_kw)
                cb.summaries[0] = s0; r["eval0_s"] = round(time.time() - t, 2)
                if cuda: torch.cuda.reset_peak_memory_stats()
                sync(); t = time.time()
                trainer = unlearn(model_, tok, forget_ds, retain_ds, method, out, lr=sched["lr"], epochs=sched["epochs"],
                                  batch_size=sched["batch_size"], grad_accum=sched["grad_accum"], seed=seed, compat=compat,
                                  weight_decay=sched.get("weight_decay", 0.01), warmup_epochs=sched.get("warmup_epochs", 1.0),
                                  optim=optim, callbacks=[cb], disable_tqdm=True)
                sync(); r["train_plus_evals_s"] = round(time.time() - t, 2)
                r["param_device"] = str(next(trainer.model.parameters()).device)
                r["param_dtype"] = str(next(trainer.model.parameters()).dtype)
                if cuda: r["peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                steps = [json.loads(l) for l in (out/"steps.jsonl").read_text().splitlines() if l.strip()]
                fl = [s.get("forget_loss") for s in steps]
                r["n_steps"] = len(steps); r["forget_loss"] = fl; r["loss"] = [s.get("loss") for s in steps]
                r["indices"] = [s.get("indices") for s in steps]
                r["curve"] = {int(e): cb.summaries[e] for e in sorted(cb.summaries)}
                fin = r["curve"].get(n_ep, {}); q0 = s0.get("forget_Q_A_Prob")
                finite = bool(steps) and all(isinstance(x, (int, float)) and math.isfinite(x) for x in fl)
                below = fin.get("forget_Q_A_Prob") is not None and q0 is not None and fin["forget_Q_A_Prob"] < q0
                r["checks"] = {"forget_loss_finite": finite, "forget_Q_A_Prob_below_target": bool(below),
                               "n_steps_is_6": len(steps) == 6}
                for c, ok in r["checks"].items(): res["checks"][f"{key}: {c}"] = ok
                msg = (f"unlearn {key}: {len(steps)} steps on {r['param_device']} ({r['param_dtype']}), train+evals "
                       f"{r['train_plus_evals_s']} s, forget_loss {[round(x, 3) for x in fl]}, forget Q_A_Prob "
                       f"{q0:.4f} -> {fin.get('forget_Q_A_Prob', float('nan')):.4f}, MU {s0.get('model_utility', float('nan')):.4f} -> "
                       f"{fin.get('model_utility', float('nan')):.4f}, FQ {fin.get('forget_quality', float('nan')):.3g}")
                log(msg + (f", peak {r['peak_GiB']} GiB" if cuda else "") + f"  checks {r['checks']}")
                r["final_forget_generations"] = generations(json.loads(
                    (out/"evals"/f"epoch_{n_ep}"/"TOFU_EVAL.json").read_text())).get("forget_Q_A_ROUGE")
                rr = (ref or {}).get("runs", {}).get(label)
                if rr: r["same_sample_order_as_study"] = [s["indices"] for s in rr["steps"]] == r["indices"]
                if rr and dtype == "float32":   # the study's CPU run of the same method: same sampler order, close losses
                    rs = rr["steps"]
                    r["vs_study_cpu_run"] = {
                        "same_indices": [s["indices"] for s in rs] == r["indices"],
                        "max_abs_forget_loss_diff": max((abs(x - y["forget_loss"]) for x, y in zip(fl, rs)), default=None),
                        "final_metric_diff": {k: fin[k] - rr["metrics"][k] for k in fin if isinstance(rr["metrics"].get(k), (int, float)) and real(k)}}
                    log(f"  vs the study's CPU run {rr['run']}: same sample order {r['vs_study_cpu_run']['same_indices']}, "
                        f"max |forget_loss diff| {r['vs_study_cpu_run']['max_abs_forget_loss_diff']:.3g}, final metric diffs "
                        + json.dumps({k: f"{v:+.2e}" for k, v in r['vs_study_cpu_run']['final_metric_diff'].items()}))
                del trainer, model_
                if cuda: torch.cuda.empty_cache()
            except Exception as e:  # noqa: BLE001
                traceback.print_exc(); res["errors"].append(f"unlearn {key}: {type(e).__name__}: {e}")
                res["checks"][f"{key}: ran"] = False
    res["timings_s"]["part_b"] = round(time.time() - t_b, 2)
    res["timings_s"]["total"] = round(time.time() - T_START, 2)
    res["ok"] = not res["errors"] and all(v for k, v in res["checks"].items() if "eval_fp32" not in k)
    log("checks:", json.dumps(res["checks"], indent=1))
    log("errors:", res["errors"])
    log(f"timings (s): {json.dumps(res['timings_s'])}")
    log(f"GPU_TINY_E2E {'OK' if res['ok'] else 'FAILED'}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
