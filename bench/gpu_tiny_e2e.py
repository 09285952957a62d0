#!/usr/bin/env python
"""End-to-end GPU check of the tiny study: the finetuned tiny-llama target, the study's evaluation and unlearning.

  (a) `evaluate_tofu` of the target in float32/eager on the CPU (the study's setting) and on `--device`, plus once in
      bfloat16/sdpa on `--device`; prints the largest absolute difference of the summary metrics and of the per-sample
      average losses, and how many greedy generations are identical;
  (b) the experiment notebook itself, nbs/experiments/unlearn.ipynb, executed by papermill exactly as a run of
      `baldro run` executes it (one run per method x dtype/attention setting: NPO and BalDRO-DV+NPO, in bfloat16/sdpa,
      the GPU setting, and in float32/eager, the study's, compared with the study's CPU run when `--reference` holds
      it), evaluated at epochs 0, 1, 2; reads the run folder it wrote and checks that the forget loss of every step in
      steps.jsonl is finite, that the forget Q_A_Prob after training is below the target's and that the weights were on
      `--device` (metrics.json's `device`);
  (c) times every part. Writes a JSON summary to `--json`.

The settings are the unlearn notebook's defaults with the evaluation of params/study_tiny.yaml (forget01, data_source
"tofu-mini:40", eval_rows None, max_new_tokens 64, eval batch 32; lr 3e-3, batch 4 x grad-accum 2, 2 epochs).
Without wordfreq (not carried to the GPU machine) the forget generations are not scored for gibberish (`gibberish:
None`, a parameter of the notebook). Data and models come from `$BALDRO_OUTPUTS` (or `--outputs`):
outputs/models/<model>/full, outputs/retain_logs/..., and the TOFU-mini folder (found by `resolve_source`, so Faker is
never called).

    python bench/gpu_tiny_e2e.py --device cpu --methods NPO --unlearn-settings float32/eager --json /tmp/e2e.json
    BALDRO_OUTPUTS=.gpudata/outputs python3 bench/gpu_tiny_e2e.py --json $OUT/gpu_e2e.json --reference .gpudata/reference.json
"""
from __future__ import annotations
import argparse, importlib, importlib.util, json, math, os, sys, time, traceback
from pathlib import Path

T_START = time.time()
ROOT = Path(__file__).resolve().parent.parent
UNLEARN_NB = ROOT/"nbs"/"experiments"/"unlearn.ipynb"


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


def run_notebook(params: dict, out: Path, device: str, timeout: float | None = None) -> None:
    """Execute the unlearn notebook with `params` (what `papermill nbs/experiments/unlearn.ipynb OUT -f params.yaml --cwd nbs`
    does for a run of `baldro run`); the executed copy is `out/unlearn.ipynb`. On `device` cpu no GPU is visible to it."""
    import papermill as pm
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device == "cpu": os.environ["CUDA_VISIBLE_DEVICES"] = ""   # the kernel inherits this process's environment
    try:
        pm.execute_notebook(str(UNLEARN_NB), str(out/"unlearn.ipynb"), parameters=params, cwd=str(ROOT/"nbs"),
                            kernel_name="python3", progress_bar=False, log_output=False, execution_timeout=timeout)
    finally:
        if saved is None: os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else: os.environ["CUDA_VISIBLE_DEVICES"] = saved


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
    p.add_argument("--gibberish", default="auto", choices=["auto", "none", "offline"],
                   help="auto: the offline scorer when wordfreq is importable, else none (generations not scored)")
    p.add_argument("--rows", default="auto", choices=["auto", "datasets", "jsonl"],
                   help="how part (a) reads TOFU rows: datasets (load_tofu, the study's way), jsonl (the TOFU-mini files "
                        "read directly, passed as an in-memory source); auto: datasets, or jsonl if `import datasets` fails. "
                        "The notebook of part (b) always reads them as the study does")
    p.add_argument("--skip-eval-compare", action="store_true")
    p.add_argument("--cell-timeout", type=float, default=None, help="papermill's per-cell timeout in part (b), seconds")
    a = p.parse_args(argv)

    if a.outputs: os.environ["BALDRO_OUTPUTS"] = str(Path(a.outputs).resolve())
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
    import torch
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.startswith("cuda")
    res = {"device": dev, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "versions": versions(), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "checks": {}, "errors": [], "warnings": [],
           "timings_s": {}}
    log("versions:", json.dumps(res["versions"], indent=1))
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    import transformers
    transformers.logging.set_verbosity_error()
    from baldro_nb.core import set_offline, seed_everything, outputs_dir, check
    set_offline()
    import baldro_nb.evaluation as E
    from baldro_nb.data import load_tofu, resolve_source
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    from baldro_nb.training import run_schedule
    from baldro_nb.evaluation import evaluate_tofu, eval_source
    from baldro_nb.vocab import retain_log_rel, method_label

    # -- gibberish: the offline scorer needs wordfreq (~56 MB, not carried to the GPU machine) -----------------------
    gmode = a.gibberish
    if gmode == "auto": gmode = "offline" if importlib.util.find_spec("wordfreq") else "none"
    gibberish = None if gmode == "none" else "offline"
    if gibberish is None: log("NOTE: no wordfreq: the forget generations are not scored for gibberish (gibberish: None)")
    res["gibberish"] = gmode
    real = lambda k: not k.startswith("gibberish")   # gibberish is compared nowhere: it may be unscored on one side

    # -- the study's settings (params/study_tiny.yaml x nbs/experiments/unlearn.ipynb) -------------------------------
    from baldro_nb.grid import notebook_defaults
    nb = notebook_defaults(UNLEARN_NB)   # the notebook's parameters cell: part (b) changes only what is named below
    model, forget_split, data_source, eval_rows, max_new_tokens, eval_batch_size, seed = a.model, "forget01", "tofu-mini:40", None, 64, 32, 0
    study = dict(model=model, forget_split=forget_split, data_source=data_source, eval_rows=eval_rows,
                 max_new_tokens=max_new_tokens, eval_batch_size=eval_batch_size, seed=seed, gibberish=gibberish)
    sched = run_schedule(nb["training"], lr=nb["lr"], epochs=nb["epochs"], batch_size=nb["batch_size"], grad_accum=nb["grad_accum"])
    compat = nb["compat"]
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
    src = (eval_source(forget_split, data_source, eval_rows) if rows_mode == "datasets"
           else {cfg: rows_of(cfg) for cfg in E.eval_sets(forget_split).values()})
    res["timings_s"]["data"] = round(time.time() - t, 2)
    eval_kw = dict(source=src, forget_split=forget_split, retain_logs=retain_path, batch_size=eval_batch_size,
                   max_new_tokens=max_new_tokens, gibberish=gibberish)
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
    if not a.skip_eval_compare:
        try:
            t = time.time(); m_cpu = load_model(target, dtype="float32", attn_implementation="eager", device="cpu")
            cpu_logs, cpu_s = timed_eval("cpu_fp32_eager", m_cpu); del m_cpu
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

    # -- (b) the unlearn notebook on the device, as `baldro run` executes it -------------------------------------------
    res["unlearn"] = {}
    t_b = time.time()
    n_forget = len(rows_of(forget_split))   # steps: epochs x ceil(forget rows / (batch x grad-accum)), the trainer keeps the last batch
    n_expected = int(round(sched["epochs"])) * math.ceil(n_forget / (sched["batch_size"] * sched["grad_accum"]))
    res["expected_steps"] = n_expected
    for label in [x.strip() for x in a.methods.split(",") if x.strip()]:
        objective = label.split("+")[-1]; rw = "dv" if label.startswith("BalDRO-DV") else ("group" if label.startswith("BalDRO-G") else "mean")
        for setting in [x.strip() for x in a.unlearn_settings.split(",") if x.strip()]:
            dtype, attn = setting.split("/")
            key = f"{label}|{dtype}/{attn}"
            r = res["unlearn"][key] = {}
            try:
                check(method_label(dict(objective=objective, reweighting=rw)) == label, f"label mismatch for {label}")
                out = work/f"unlearn__{label}__{dtype}_{attn}"
                import shutil; shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
                params = {**study, "objective": objective, "reweighting": rw, "dtype": dtype, "attn_implementation": attn,
                          "out_dir": str(out)}
                r["params"] = params
                t = time.time()
                run_notebook(params, out, dev, a.cell_timeout)
                r["notebook_s"] = round(time.time() - t, 2)
                m = json.loads((out/"metrics.json").read_text())
                r["param_device"], r["train_s"], r["run_s"] = m.get("device"), m.get("train_s"), m.get("run_s")
                if cuda: r["peak_GiB"] = m.get("peak_gpu_GiB")
                steps = [json.loads(l) for l in (out/"steps.jsonl").read_text().splitlines() if l.strip()]
                fl = [x.get("forget_loss") for x in steps]
                r["n_steps"] = len(steps); r["forget_loss"] = fl; r["loss"] = [x.get("loss") for x in steps]
                r["indices"] = [x.get("indices") for x in steps]
                n_ep = int(round(sched["epochs"]))
                r["curve"] = {int(e.name.split("_")[1]): json.loads((e/"TOFU_SUMMARY.json").read_text())
                              for e in sorted((out/"evals").glob("epoch_*")) if (e/"TOFU_SUMMARY.json").exists()}
                s0, fin = r["curve"].get(0, {}), r["curve"].get(n_ep, {})
                q0 = s0.get("forget_Q_A_Prob")
                finite = bool(steps) and all(isinstance(x, (int, float)) and math.isfinite(x) for x in fl)
                below = fin.get("forget_Q_A_Prob") is not None and q0 is not None and fin["forget_Q_A_Prob"] < q0
                on_device = str(r["param_device"]).split(":")[0] == dev.split(":")[0]
                r["checks"] = {"forget_loss_finite": finite, "forget_Q_A_Prob_below_target": bool(below),
                               "n_steps_as_expected": len(steps) == n_expected, "weights_on_device": on_device,
                               "epochs_0_to_last_evaluated": sorted(r["curve"]) == list(range(n_ep + 1))}
                for c, ok in r["checks"].items(): res["checks"][f"{key}: {c}"] = ok
                msg = (f"unlearn {key}: {len(steps)} steps on {r['param_device']} ({dtype}), notebook {r['notebook_s']} s "
                       f"(training {r['train_s']} s), forget_loss {[round(x, 3) for x in fl]}, forget Q_A_Prob "
                       f"{q0:.4f} -> {fin.get('forget_Q_A_Prob', float('nan')):.4f}, MU {s0.get('model_utility', float('nan')):.4f} -> "
                       f"{fin.get('model_utility', float('nan')):.4f}, FQ {fin.get('forget_quality', float('nan')):.3g}")
                log(msg + (f", peak {r.get('peak_GiB')} GiB" if cuda else "") + f"  checks {r['checks']}")
                r["final_forget_generations"] = generations(json.loads(
                    (out/"evals"/f"epoch_{n_ep}"/"TOFU_EVAL.json").read_text())).get("forget_Q_A_ROUGE")
                rr = (ref or {}).get("runs", {}).get(label)
                if rr: r["same_sample_order_as_study"] = [x["indices"] for x in rr["steps"]] == r["indices"]
                if rr and dtype == "float32":   # the study's CPU run of the same method: same sampler order, close losses
                    rs = rr["steps"]
                    r["vs_study_cpu_run"] = {
                        "same_indices": [x["indices"] for x in rs] == r["indices"],
                        "max_abs_forget_loss_diff": max((abs(x - y["forget_loss"]) for x, y in zip(fl, rs)), default=None),
                        "final_metric_diff": {k: fin[k] - rr["metrics"][k] for k in fin if isinstance(rr["metrics"].get(k), (int, float)) and real(k)}}
                    log(f"  vs the study's CPU run {rr['run']}: same sample order {r['vs_study_cpu_run']['same_indices']}, "
                        f"max |forget_loss diff| {r['vs_study_cpu_run']['max_abs_forget_loss_diff']:.3g}, final metric diffs "
                        + json.dumps({k: f"{v:+.2e}" for k, v in r['vs_study_cpu_run']['final_metric_diff'].items()}))
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
