"""Acceptance check: the tiny-llama target (general + full) and retain (general + retain99) models, finetuned
with `TINY_RECIPE` on the study's TOFU-mini (`STUDY_SOURCE`), reproduce what they should word for word. Greedy exact
match on every row of each split; both models are cached under outputs/models/tiny-llama/ (about a minute each to
build on 2 CPU cores)."""
import os

import pytest

for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"
finetune = pytest.importorskip("baldro_nb.finetune", reason="needs 04_finetune")


def test_tiny_llama_target_and_retain_meet_the_acceptance_bars():
    from baldro_nb.data import STUDY_SOURCE, load_tofu
    tab = finetune.tiny_acceptance_table("tiny-llama", source=STUDY_SOURCE)
    print("\n" + tab.to_string())
    # the splits are what the bars assume: forget01 = two authors (40 rows, as in TOFU), retain99 = the other 38
    assert len(load_tofu("forget01", STUDY_SOURCE)) == 40 and len(load_tofu("retain99", STUDY_SOURCE)) == 760
    # the bars, written out here independently of finetune.ACCEPTANCE
    t, r = tab.loc["target"], tab.loc["retain"]
    assert t["full"] >= 95 and t["forget01"] >= 95, tab
    assert r["forget01"] <= 10 and r["retain99"] >= 95, tab
    for g in ("real_authors_perturbed", "world_facts_perturbed"):
        assert t[g] >= 90 and r[g] >= 90, tab


# --- forget quality's yardstick: the retain model must be indifferent on the forget set (issue 12) -------------------
# TOFU-mini deals every fact from a shared pool (nbs/02_data.ipynb), so a model that never saw the forget01 authors
# has no reason to prefer their paraphrased answers over the perturbed ones; the target model, which learnt them, does.

def forget_log10_truth_ratio(model: str, stage: str, source=None, forget_split: str = "forget01"):
    """Per forget row of the cached tiny `model` finetuned for `stage`: log10 P(pert)/P(para), the raw truth ratio
    (per-token average losses; the 5 perturbed answers' losses averaged first, as open-unlearning does)."""
    import numpy as np
    from baldro_nb.evaluation import evaluate_tofu
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    spec = get_spec(model)
    d = finetune.ensure_tiny_finetuned(model, stage, source=source)
    logs, _ = evaluate_tofu(load_model(d), load_tokenizer(d, spec), spec.template, source=source,
                            forget_split=forget_split, sets=("forget",), generate=False)
    vals = lambda k, f: [v[f] for v in logs[k]["value_by_index"].values()]
    para = np.array(vals("forget_Q_A_PARA_Prob", "avg_loss"))
    pert = np.array(vals("forget_Q_A_PERT_Prob", "avg_loss")).mean(1)
    out = (para - pert) / np.log(10)          # log10 exp(-L_pert) / exp(-L_para)
    # the stored per-row truth ratio is this raw ratio (not min(tr, 1/tr)); it adds 1e-10 to P(para)
    np.testing.assert_allclose(np.log10(vals("forget_truth_ratio", "score")), out, atol=1e-4)
    return out


# item 4 of issue 12: the retain model indifferent (|mean| <= 0.1 each, <= 0.05 averaged over the three
# architectures), the target preferring the paraphrase by <= -0.2 (the tiny models learn the two wordings from the
# phrasing authors, nbs/02_data.ipynb#phrasing-authors; without them the targets reached only -0.18 to -0.23)
RETAIN_EACH, RETAIN_AVG, TARGET_MAX = 0.1, 0.05, -0.2
TINY = ("tiny-llama", "tiny-qwen3", "tiny-mistral")
# building the tiny-qwen3 and tiny-mistral target + retain models adds ~7-8 min on 2 busy cores: opt-in
slow = pytest.mark.skipif(os.environ.get("BALDRO_SLOW_TESTS") != "1",
                          reason="slow: builds 4 more tiny models (~8 min on 2 cores); set BALDRO_SLOW_TESTS=1")


def _indifference(model):
    from baldro_nb.data import STUDY_SOURCE
    r, t = (forget_log10_truth_ratio(model, st, STUDY_SOURCE) for st in ("retain99", "full"))
    print(f"\n{model}: mean log10 P(pert)/P(para) on forget01: retain {r.mean():+.3f} ({(r > 0).mean():.0%} > 0), "
          f"target {t.mean():+.3f} ({(t > 0).mean():.0%} > 0)")
    assert len(r) == len(t) == 40
    return r.mean(), t.mean()


def test_tiny_llama_retain_is_indifferent_on_forget01_and_target_prefers_the_paraphrase():
    r, t = _indifference("tiny-llama")
    assert abs(r) <= RETAIN_EACH and t <= TARGET_MAX, (r, t)


@slow
def test_three_tiny_retain_models_are_indifferent_on_forget01():
    res = {m: _indifference(m) for m in TINY}
    for m, (r, t) in res.items(): assert abs(r) <= RETAIN_EACH and t <= TARGET_MAX, (m, r, t)
    avg = sum(r for r, _ in res.values()) / len(res)
    assert abs(avg) <= RETAIN_AVG, (avg, res)
