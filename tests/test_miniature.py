"""The miniature notebook end to end on the tiny-llama target and retain models: calibration rules recomputed from the
files the runs wrote, paired seeds (same data order for base and variant), ≥ fq_points+1 evaluations per run, DV really
reweighting (ESS/B < 1), and resume (a second execution retrains nothing)."""
import json, os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
finetune = pytest.importorskip("baldro_nb.finetune", reason="needs the tiny finetuned models (04_finetune)")
import papermill as pm

from baldro_nb.core import read_json
from baldro_nb.data import STUDY_SOURCE

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/"nbs/experiments/miniature.ipynb"


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    from baldro_nb.evaluation import make_retain_reference, eval_source
    d = tmp_path_factory.mktemp("mini")
    target = finetune.ensure_tiny_finetuned("tiny-llama", "full", source=STUDY_SOURCE)
    rdir = finetune.ensure_tiny_finetuned("tiny-llama", "retain99", source=STUDY_SOURCE)
    log = make_retain_reference(load_model(str(rdir)), load_tokenizer(str(rdir)), get_spec("tiny-llama").template, d/"retain",
                                source=eval_source("forget01", STUDY_SOURCE, 8), forget_split="forget01", max_new_tokens=8, batch_size=64)
    params = dict(model="tiny-llama", objective="NPO", variants=[{"reweighting": "mean"}, {"reweighting": "dv", "direction": "softmin"}],
                  seeds=[0, 1], lr_grid=[1e-5, 3e-3], max_steps=12, fq_points=4, mu_points=2, mu_keep=0.8, eval_rows=8, max_new_tokens=8,
                  data_source=STUDY_SOURCE, target_dir=str(target), retain_log=str(log), out_dir=str(d/"out"))
    pm.execute_notebook(str(NB), str(d/"run.ipynb"), parameters=params, cwd=str(ROOT/"nbs"), kernel_name="python3", progress_bar=False)
    return d/"out", params, log


def test_calibration_follows_the_stated_rules(cell):
    out, p, log = cell
    cal = read_json(out/"calibration.json")
    retain_prob = read_json(log)["forget_Q_A_Prob"]["agg_value"]
    # the learning rate, the rule written out again: going up the grid, a rate that lost model utility (< mu_keep x the
    # target's at the end of its run, which lasts the run length the rate implies) ends the ladder with the rate below it; the first that reached the retain model's
    # forget probability (from its answer-probability trace) with utility kept is taken; else the largest
    expect, bar = None, p["mu_keep"] * cal["target_mu"]
    for i, lr in enumerate(sorted(p["lr_grid"])):
        assert str(lr) in cal["trace"], (lr, cal)   # the ladder stopped here at the latest
        if cal["mu_at_end"][str(lr)] < bar: expect = sorted(p["lr_grid"])[max(i - 1, 0)]; break
        if min(x[1] for x in cal["trace"][str(lr)]) <= retain_prob: expect = lr; break
    assert cal["lr"] == (expect if expect is not None else max(p["lr_grid"])), cal
    assert len(cal["trace"]) == i + 1, cal          # no rate above the one that ended the ladder was tried
    for lr, st in cal["reached"].items():           # each calibration run ended where the runs of its rate would
        assert cal["end_step"][lr] == (p["max_steps"] if st is None else min(p["max_steps"], max(p["fq_points"], int(np.ceil(1.5 * st))))), cal
    # beta_dv: median over the calibration run's micro-batches of the sd of its per-sample losses (from its steps.jsonl)
    # up to the step it reached the retain model's forget probability (the run goes on to its run length after it)
    upto = cal["reached"][str(float(cal["lr"]))] or p["max_steps"]
    steps = [json.loads(l) for l in (out/"calibration"/f"lr{cal['lr']:g}"/"steps.jsonl").read_text().splitlines() if l.strip()]
    steps = [s for s in steps if s["step"] <= upto]
    assert abs(cal["beta_dv"] - max(1e-4, float(np.median([np.std(s["per_sample_loss"]) for s in steps])))) < 1e-12
    # run length: 1.5 x the step it reached, within [fq_points, max_steps]
    st = cal["reached"][str(float(cal["lr"]))]
    assert cal["n_steps"] == (min(p["max_steps"], max(p["fq_points"], int(np.ceil(1.5 * st)))) if st is not None else p["max_steps"])


def test_runs_are_paired_evaluated_often_and_dv_reweights(cell):
    out, p, _ = cell
    ep = pd.read_csv(out/"endpoints.csv"); tj = pd.read_csv(out/"trajectory.csv")
    assert sorted(zip(ep.variant, ep.seed)) == [("BalDRO-DV", 0), ("BalDRO-DV", 1), ("base", 0), ("base", 1)]
    n = read_json(out/"calibration.json")["n_steps"]
    for (v, s), g in tj.groupby(["variant", "seed"]):
        run = out/"runs"/f"{v}__seed{s}"
        lines = [json.loads(l) for l in (run/"steps.jsonl").read_text().splitlines() if l.strip()]
        stopped = ep[(ep.variant == v) & (ep.seed == s)].stop_reason.iloc[0] == "utility"
        assert stopped or len(lines) == n, (v, s, len(lines))
        assert stopped or g.step.nunique() >= min(n, p["fq_points"]) + 1
        assert g.model_utility.notna().sum() >= (1 if stopped else p["mu_points"])
        assert g.step.iloc[0] == 0 and g.forget_quality.notna().all()
    for s in (0, 1):   # same seed -> same forget samples in the same order at every step
        a = [json.loads(l)["indices"] for l in (out/"runs"/f"base__seed{s}"/"steps.jsonl").read_text().splitlines() if l.strip()]
        b = [json.loads(l)["indices"] for l in (out/"runs"/f"BalDRO-DV__seed{s}"/"steps.jsonl").read_text().splitlines() if l.strip()]
        k = min(len(a), len(b)); assert k and a[:k] == b[:k]
    dv = ep[ep.variant == "BalDRO-DV"]
    assert (dv.min_ess_frac < 0.999).all() and (ep[ep.variant == "base"].min_ess_frac > 0.999).all(), ep.min_ess_frac
    for s in (0, 1):
        lines = [json.loads(l) for l in (out/"runs"/f"BalDRO-DV__seed{s}"/"steps.jsonl").read_text().splitlines() if l.strip()]
        assert abs(dv[dv.seed == s].min_ess_frac.iloc[0] - min(l["ess_frac"] for l in lines)) < 1e-12


def test_rerun_resumes_without_retraining(cell, tmp_path):
    out, p, _ = cell
    before = {f.name: f.stat().st_mtime_ns for f in (out/"runs").glob("*.json")}
    pm.execute_notebook(str(NB), str(tmp_path/"again.ipynb"), parameters=p, cwd=str(ROOT/"nbs"), kernel_name="python3", progress_bar=False)
    assert {f.name: f.stat().st_mtime_ns for f in (out/"runs").glob("*.json")} == before
    assert len(pd.read_csv(out/"endpoints.csv")) == 4
