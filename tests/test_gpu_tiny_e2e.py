"""bench/gpu_tiny_e2e.py on the CPU, so that the GPU check's end-to-end step cannot rot between GPU runs: it executes
the unlearn notebook (papermill) on the shared tiny-llama target and checks the run folder it wrote. The expected
step count is computed here by hand: TOFU-mini:40's forget01 holds 2 authors x 20 QA = 40 rows; batch 4 x grad-accum 2
makes 5 optimizer steps an epoch, 2 epochs make 10."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
finetune = pytest.importorskip("baldro_nb.finetune", reason="needs the tiny finetuned models (04_finetune)")
from baldro_nb.data import STUDY_SOURCE

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_tiny_e2e_runs_the_unlearn_notebook_on_cpu(tmp_path):
    from baldro_nb.core import outputs_dir
    from baldro_nb.evaluation import eval_source, make_retain_reference
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    out = tmp_path/"outputs"; (out/"models"/"tiny-llama").mkdir(parents=True)
    target = finetune.ensure_tiny_finetuned("tiny-llama", "full", source=STUDY_SOURCE)
    rdir = finetune.ensure_tiny_finetuned("tiny-llama", "retain99", source=STUDY_SOURCE)
    (out/"models"/"tiny-llama"/"full").symlink_to(target)
    (out/"data").symlink_to(outputs_dir()/"data")   # TOFU-mini, as the study generated it
    make_retain_reference(load_model(str(rdir)), load_tokenizer(str(rdir)), get_spec("tiny-llama").template,
                          out/"retain_logs"/"tiny-llama_retain99", source=eval_source("forget01", STUDY_SOURCE, 8),
                          forget_split="forget01", max_new_tokens=8, batch_size=64)
    res = tmp_path/"e2e.json"
    r = subprocess.run([sys.executable, "bench/gpu_tiny_e2e.py", "--device", "cpu", "--outputs", str(out), "--methods", "NPO",
                        "--unlearn-settings", "float32/eager", "--skip-eval-compare", "--work", str(tmp_path/"work"),
                        "--json", str(res)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    s = json.loads(res.read_text())
    run = s["unlearn"]["NPO|float32/eager"]
    assert s["ok"] and s["expected_steps"] == 10 and run["n_steps"] == 10, s["checks"]
    assert run["param_device"] == "cpu" and all(run["checks"].values()), run["checks"]
    assert sorted(run["curve"]) == ["0", "1", "2"] and (tmp_path/"work"/"unlearn__NPO__float32_eager"/"unlearn.ipynb").exists()
