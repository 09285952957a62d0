"""bench/gpu_check.sh in dry mode (CPU, tiny configurations, no wheels, no nvidia-smi): the same script the lent GPU
machine runs, so that it cannot rot between GPU runs. Every variant × objective × reweighting cell of the method
matrix has its JSON record: ran and passed, or skipped with a reason (LoRA on a 4-bit base without bitsandbytes/CUDA;
token-level DV cells for the per-sequence objectives NPO/SimNPO)."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELLS = ("mean", "dv_softmin", "dv_softmax", "dv_forget_set", "dv_token", "dv_scalar", "group")
OBJECTIVES = ("grad_ascent", "grad_diff", "npo", "simnpo", "satimp", "wga", "tnpo")
VARIANTS = ("full", "lora", "lora_4bit")


def test_gpu_check_dry_runs_every_cell(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_CHECK_BUDGET_S": "280"}
    r = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=330)
    log = (tmp_path/"gpu_check.log").read_text()
    assert r.returncode == 0, log[-4000:]
    assert "GPU CHECK DONE" in log and "nvidia-smi: dry mode" in log
    assert "versions=0" in log and "reweighting_matrix=0" in log and "smoke_tiny_cpu=0" in log, log[-2000:]
    rows = json.loads((tmp_path/"reweighting_matrix.json").read_text())
    got = {(x["variant"], x["objective"], x["cell"]): x for x in rows}
    assert len(got) == len(rows) == len(VARIANTS) * len(OBJECTIVES) * len(CELLS)
    assert set(got) == {(v, o, c) for v in VARIANTS for o in OBJECTIVES for c in CELLS}
    for (v, o, c), x in got.items():
        na = c in ("dv_token", "dv_scalar") and o in ("npo", "simnpo")
        no_4bit = v == "lora_4bit" and x.get("skipped") and ("bitsandbytes" in x["skipped"] or "CUDA" in x["skipped"])
        if na or no_4bit:
            assert x["ok"] is None and x["skipped"], x
        else:
            assert x["ok"] is True and x["weights_on_device"] is True and x["step_ms"] > 0 and x["dtype"] == "bfloat16", x
    assert json.loads((tmp_path/"smoke_1b.json").read_text())["step_cache"]["median_s"] > 0
