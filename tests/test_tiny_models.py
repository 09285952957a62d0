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
    # the splits are what the bars assume: forget01 = one author (20 rows), retain99 = the other 39
    assert len(load_tofu("forget01", STUDY_SOURCE)) == 20 and len(load_tofu("retain99", STUDY_SOURCE)) == 780
    # the bars, written out here independently of finetune.ACCEPTANCE
    t, r = tab.loc["target"], tab.loc["retain"]
    assert t["full"] >= 95 and t["forget01"] >= 95, tab
    assert r["forget01"] <= 10 and r["retain99"] >= 95, tab
    for g in ("real_authors_perturbed", "world_facts_perturbed"):
        assert t[g] >= 90 and r[g] >= 90, tab
