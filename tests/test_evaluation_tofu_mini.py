"""End-to-end check on TOFU-mini with the tiny finetuned models: the retain model against its own
log has forget_quality 1.0; the target has forget_quality < 0.05 and a model utility close to the retain model's."""
import os
from pathlib import Path

import pytest

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
finetune = pytest.importorskip("baldro_nb.finetune", reason="needs the tiny finetuned models (04_finetune)")

MODEL = "tiny-llama"
from baldro_nb.data import STUDY_SOURCE   # the embedded study's TOFU-mini (40 authors; forget01 = 2 authors, 40 QA)


@pytest.fixture(scope="module")
def models():
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    out = {}
    for stage in ("full", "retain99"):
        p = Path(finetune.ensure_tiny_finetuned(MODEL, stage, source=STUDY_SOURCE))
        out[stage] = (load_model(str(p)).eval(), load_tokenizer(str(p)))
    return out, get_spec(MODEL).template


def test_forget_quality_and_utility_on_tofu_mini(models, tmp_path):
    from baldro_nb.evaluation import evaluate_tofu, make_retain_reference
    (m, tpl) = models
    retain, rtok = m["retain99"]; target, ttok = m["full"]
    ref = make_retain_reference(retain, rtok, tpl, tmp_path/"retain", source=STUDY_SOURCE, forget_split="forget01")
    _, rs = evaluate_tofu(retain, rtok, tpl, source=STUDY_SOURCE, forget_split="forget01", retain_logs=ref)
    _, ts = evaluate_tofu(target, ttok, tpl, source=STUDY_SOURCE, forget_split="forget01", retain_logs=ref,
                          out_dir=tmp_path/"target")
    print(f"\nretain99 vs own log: FQ {rs['forget_quality']:.4g}  MU {rs['model_utility']:.4f}  "
          f"forget_Q_A_Prob {rs['forget_Q_A_Prob']:.4f}  forget_truth_ratio {rs['forget_truth_ratio']:.4f}")
    print(f"full (target):       FQ {ts['forget_quality']:.4g}  MU {ts['model_utility']:.4f}  "
          f"forget_Q_A_Prob {ts['forget_Q_A_Prob']:.4f}  forget_truth_ratio {ts['forget_truth_ratio']:.4f}  "
          f"gibberish_clean_prob {ts['gibberish_clean_prob']:.3f}")
    assert rs["forget_quality"] == 1.0
    assert ts["forget_quality"] < 0.05
    assert abs(ts["model_utility"] - rs["model_utility"]) < 0.1 * rs["model_utility"]
    assert (tmp_path/"target"/"TOFU_SUMMARY.json").exists()
