"""Results keyed by what produced them (nbs/11_grid `key_by_providers`, `input_params`; nbs/13_execution
`publish_artefacts`; nbs/19_fingerprint `check_retain_identity`). The runner is the real one; fixture notebooks stand in
for the experiments (they declare the real notebooks' path parameters), so each test takes seconds.

Each test names what 63a97b3 did (the OLD behaviour a hostile-but-fair user found) and asserts the NEW one."""
import json, os
from pathlib import Path

import pytest

from baldro_nb.core import write_json
from baldro_nb.execution import run_grid
from baldro_nb.grid import load_runs
from baldro_nb.cli import main
from baldro_nb.testing import make_fixture_nb, make_fixture_project

W = "import json, os, pathlib\ndef _w(p, obj):\n    p = pathlib.Path(p); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(obj))\n"


@pytest.fixture
def proj(tmp_path, monkeypatch):
    "A fixture project whose notebooks record what they read: the finetune writes its weights into its own run folder."
    monkeypatch.delenv("BALDRO_OUTPUTS", raising=False)
    root = make_fixture_project(tmp_path/"proj")
    make_fixture_nb(root/"nbs/experiments/finetune.ipynb", {"model": "tiny-llama", "stage": "full", "epochs": 1, "out_dir": "."},
                    W + "_w(f'{out_dir}/model/config.json', {'stage': stage, 'epochs': epochs})\n_w(f'{out_dir}/metrics.json', {})")
    make_fixture_nb(root/"nbs/experiments/retain_eval.ipynb", {"model": "tiny-llama", "forget_split": "forget01", "model_dir": None, "out_dir": "."},
                    W + "w = json.load(open(f'{model_dir}/config.json'))\n_w(f'{out_dir}/TOFU_EVAL.json', {'scored': w})\n"
                    "_w(f'{out_dir}/metrics.json', {})")
    make_fixture_nb(root/"nbs/experiments/unlearn.ipynb", {"model": "tiny-llama", "objective": "NPO", "seed": 0,
                                                           "target_dir": None, "retain_log": None, "out_dir": "."},
                    W + "target_dir = target_dir or '../outputs/models/tiny-llama/full'   # the real notebooks' defaults\n"
                    "retain_log = retain_log or '../outputs/retain_logs/tiny-llama_retain99/TOFU_EVAL.json'\n"
                    "t = json.load(open(f'{target_dir}/config.json')); r = json.load(open(retain_log))\n"
                    "_w(f'{out_dir}/metrics.json', {'target': t, 'retain_log': r, 'target_dir': target_dir})")
    return root


def grid(epochs_full=1):
    return {"defaults": {"model": "tiny-llama"},
            "grid": [{"kind": "finetune", "defaults": {"epochs": epochs_full}, "axes": {"stage": "full"}},
                     {"kind": "finetune", "axes": {"stage": "retain99"}},
                     {"kind": "retain_eval"},
                     {"kind": "unlearn", "axes": {"seed": [0, 1]}}]}


def metrics(root):
    return {d.name: json.loads((d/"metrics.json").read_text()) for d in (root/"outputs/runs").glob("unlearn__*")}


def test_a_changed_upstream_makes_new_downstream_runs(proj, capfd):
    "OLD: another finetune of the target showed the finetune `todo` and its unlearning runs `done`, and reused them."
    run_grid(grid(1), root=proj, progress=False)
    first = metrics(proj)
    assert {m["target"]["epochs"] for m in first.values()} == {1}
    # the same grid again: nothing to do
    assert {s["status"] for s in run_grid(grid(1), root=proj, progress=False, dry_run=True)} == {"done"}
    # the target finetuned anew: it and the runs that read it are new; the retain side is reused
    dry = {s["run_id"]: s["status"] for s in run_grid(grid(2), root=proj, progress=False, dry_run=True)}
    head = lambda h: [v for k, v in dry.items() if k.rsplit("__", 1)[0] == h]
    assert head("finetune__tiny-llama__full") == ["todo"] and head("finetune__tiny-llama__retain99") == ["done"]
    assert head("retain_eval__tiny-llama") == ["done"]
    assert head("unlearn__tiny-llama__0") == ["todo"] and head("unlearn__tiny-llama__1") == ["todo"]
    run_grid(grid(2), root=proj, progress=False)
    new = {k: v for k, v in metrics(proj).items() if k not in first}
    assert len(new) == 2 and {m["target"]["epochs"] for m in new.values()} == {2}, new
    assert {m["target"]["epochs"] for k, m in metrics(proj).items() if k in first} == {1}   # the old runs are kept, unchanged
    # each run read its own provider's artefacts, in the provider's run folder
    for m in new.values(): assert m["target_dir"].startswith("../outputs/runs/finetune__tiny-llama__full__"), m
    # the shared name keeps what the first finetune published, and the runner said so
    assert json.loads((proj/"outputs/models/tiny-llama/full/config.json").read_text())["epochs"] == 1
    assert "outputs/models/tiny-llama/full stays as published by" in capfd.readouterr().err   # printed by the worker


def test_ids_do_not_depend_on_the_outputs_folder(proj, tmp_path):
    "Keying by provider run ids, not paths: the same grid has the same ids wherever its outputs go."
    a = [r["run_id"] for r in load_runs(grid(1))]
    run_grid(grid(1), root=proj, outputs=tmp_path/"elsewhere", progress=False)
    assert sorted(d.name for d in (tmp_path/"elsewhere/runs").iterdir()) == sorted(set(a))


def test_a_foreign_retain_log_is_refused_before_any_compute(proj, capsys, monkeypatch):
    "OLD: tiny-qwen3's retain log given to a tiny-llama run was used (forget quality 0.0143 instead of 0.0030), no warning."
    out = proj/"outputs"
    (out/"models/tiny-llama/full").mkdir(parents=True); (out/"models/tiny-llama/full/config.json").write_text('{"epochs": 1}')
    log = out/"elsewhere/TOFU_EVAL.json"; write_json(log, {"scored": "qwen"})
    write_json(log.parent/"identity.json", {"model": "tiny-qwen3", "forget_split": "forget01", "data_source": "tofu-mini:40"})
    f = proj/"params.yaml"
    f.write_text(f"kind: unlearn\nmodel: tiny-llama\nretain_log: {os.path.relpath(log, proj/'nbs')}\n")
    monkeypatch.chdir(proj)
    assert main(["run", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another run of the retain model (model: the log's 'tiny-qwen3', this run's 'tiny-llama')" in err, err
    assert "set retain_log_check: false" in err and not (out/"runs").exists()


def test_a_deleted_or_truncated_model_is_named_and_redone(proj, capsys):
    "OLD: a deleted model folder left its finetune `done`; the next run failed on an HFValidationError naming a hub id."
    run_grid(grid(1), root=proj, progress=False)
    ft = next((proj/"outputs/runs").glob("finetune__tiny-llama__full__*")); w = ft/"model/config.json"
    good = w.read_text(); w.write_text(good[:5])                                   # cut short
    dry = {s["run_id"]: s["status"] for s in run_grid(grid(1), root=proj, progress=False, dry_run=True)}
    assert dry[ft.name] == "todo" and sum(v == "todo" for v in dry.values()) == 1, dry
    assert f"(corrupt: {w}: 5 bytes, {len(good)} when the run finished)" in capsys.readouterr().out
    run_grid(grid(1), root=proj, progress=False)
    assert w.read_text() == good and "redoing " + ft.name in capsys.readouterr().err
    import shutil; shutil.rmtree(ft/"model")                                        # deleted
    dry = {s["run_id"]: s["status"] for s in run_grid(grid(1), root=proj, progress=False, dry_run=True)}
    assert dry[ft.name] == "todo" and "config.json: missing (it was there when the run finished)" in capsys.readouterr().out
    run_grid(grid(1), root=proj, progress=False)
    assert w.read_text() == good


def test_a_run_reading_an_artefact_from_outside_its_grid_is_keyed_by_its_content(proj):
    "OLD: a grid of unlearning runs alone reused its runs after the target model they read was replaced."
    out = proj/"outputs"
    write_json(out/"models/tiny-llama/full/config.json", {"epochs": 1})
    write_json(out/"retain_logs/tiny-llama_retain99/TOFU_EVAL.json", {"scored": "r"})
    alone = {"defaults": {"model": "tiny-llama"}, "grid": [{"kind": "unlearn", "axes": {"seed": 0}}]}
    first = run_grid(alone, root=proj, progress=False)[0]["run_id"]
    assert [s["status"] for s in run_grid(alone, root=proj, progress=False, dry_run=True)] == ["done"]
    write_json(out/"models/tiny-llama/full/config.json", {"epochs": 2})          # replaced by another finetune
    dry = run_grid(alone, root=proj, progress=False, dry_run=True)
    assert dry[0]["status"] == "todo" and dry[0]["run_id"] != first


def test_a_cut_or_deleted_tiny_model_is_named_and_retrained_by_the_real_runner(tmp_path, monkeypatch, capfd):
    "The real finetune notebook and a real tiny model (tiny-llama, 1 epoch on a few rows): OLD, a deleted model folder left the"
    "run `done` and the next run failed on an HFValidationError naming a hub id; a truncated model.safetensors gave"
    "'SafetensorError: incomplete metadata'. NEW: the dry run names the file, `baldro run` retrains it."
    from baldro_nb.core import repo_root
    import hashlib, shutil
    monkeypatch.setenv("BALDRO_OUTPUTS", str(tmp_path/"outputs"))
    g = {"kind": "finetune", "model": "tiny-llama", "stage": "full", "data_source": "tofu-mini:2", "epochs": 1,
         "max_rows": 8, "eval_rows": 2}
    root = repo_root()
    assert run_grid(g, root=root, outputs=tmp_path/"outputs", progress=False)[0]["status"] == "ok"
    d = next((tmp_path/"outputs/runs").glob("finetune__*")); w = d/"model/model.safetensors"
    sha = lambda: hashlib.sha256(w.read_bytes()).hexdigest(); good = sha()
    w.write_bytes(w.read_bytes()[:1000])
    dry = run_grid(g, root=root, outputs=tmp_path/"outputs", progress=False, dry_run=True)
    assert dry[0]["status"] == "todo" and f"(corrupt: {w}: 1000 bytes" in capfd.readouterr().out   # named, before anything runs
    assert run_grid(g, root=root, outputs=tmp_path/"outputs", progress=False)[0]["status"] == "ok"
    assert sha() == good                                   # retrained, bit for bit (one thread, pinned arithmetic)
    shutil.rmtree(d/"model")
    capfd.readouterr(); dry = run_grid(g, root=root, outputs=tmp_path/"outputs", progress=False, dry_run=True)
    assert dry[0]["status"] == "todo" and f"(corrupt: {d/'model'}/" in capfd.readouterr().out   # the first of its files named
    assert run_grid(g, root=root, outputs=tmp_path/"outputs", progress=False)[0]["status"] == "ok" and sha() == good
