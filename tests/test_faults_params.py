"""Bad params files get one clear, early error, before any compute (no model runs here: dry runs and `grid.validate`).

Each test names the OLD behaviour a hostile-but-fair user found on `baldro run params.yaml` and asserts the NEW one:
a `BaldroError` (exit status 2 from `baldro run`) whose message names the run id, the parameter, the value, the params
file and the fix. The grids use the repository's real experiment notebooks; outputs go to a temporary folder, and every
grid makes its own target model and retain log, so the dependency check passes.
"""
import os
import pytest

from baldro_nb.core import BaldroError, repo_root
from baldro_nb.grid import load_runs, notebook_params, validate
from baldro_nb.schema import PARAM_SCHEMA, coerce_param
from baldro_nb.cli import main

ROOT = repo_root()
# the producers every unlearning run of these grids needs (a target model and a retain log for tiny-llama)
HEAD = """grid:
  - kind: finetune
    axes: {model: tiny-llama, stage: [full, retain99]}
  - kind: retain_eval
    defaults: {model: tiny-llama}
"""

def unlearn(axes: str, defaults: str = "model: tiny-llama, objective: NPO") -> str:
    return HEAD + f"  - kind: unlearn\n    defaults: {{{defaults}}}\n    axes: {{{axes}}}\n"

@pytest.fixture
def env(tmp_path, monkeypatch):
    "A temporary outputs folder (also for `baldro`), offline."
    monkeypatch.setenv("BALDRO_OUTPUTS", str(tmp_path/"outputs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path

def write(env, text: str, name: str = "faulty.yaml"):
    f = env/name; f.write_text(text); return f

def check_runs(f, env):
    "load_runs + validate, as `baldro run` does before anything runs; returns the (validated) runs."
    runs = load_runs(f)
    validate(runs, ROOT, env/"outputs")
    return runs

def dry_run(f, capsys, *extra):
    "`baldro run F --dry-run`: (exit status, stderr)."
    rc = main(["run", str(f), "--dry-run", *extra])
    return rc, capsys.readouterr().err

def assert_one_clear_message(err: str, f, *parts):
    "One `baldro:` error naming the file and every part, no traceback."
    assert err.startswith("baldro: "), err
    assert "Traceback" not in err, err
    assert str(f) in err, err
    for p in parts: assert p in err, (p, err)

# --- 1. types and ranges, checked at --dry-run --------------------------------------------------------------------

def test_lr_written_1e_3_is_a_number_for_the_kernel(env, capsys):
    "OLD: PyYAML reads `lr: 1e-3` as the *text* '1e-3'; the dry run passed and the kernel failed with `TypeError: '>' not"
    "supported between instances of 'str' and 'int'`, never naming lr. NEW: it is coerced to the float 0.001, which is"
    "what the executor hands papermill (and writes to the run's params.yaml)."
    f = write(env, unlearn("lr: 1e-3"))
    runs = check_runs(f, env)
    (u,) = [r for r in runs if r["kind"] == "unlearn"]
    assert u["params"]["lr"] == 0.001 and type(u["params"]["lr"]) is float
    # the same run as `lr: 1.0e-3` (which YAML reads as a number): same run id, so resume works either way
    g = write(env, unlearn("lr: 1.0e-3"), "same.yaml")
    assert [r["run_id"] for r in load_runs(g)] == [r["run_id"] for r in runs]
    # validate normalises in place what a hand-built run carries as text
    u["params"]["lr"] = "3e-4"; validate(runs, ROOT, env/"outputs")
    assert u["params"]["lr"] == 3e-4 and type(u["params"]["lr"]) is float
    rc, err = dry_run(f, capsys)
    assert rc == 0, err

def test_lr_not_a_number(env, capsys):
    "OLD: passed the dry run, failed inside the kernel. NEW: refused, naming run id, parameter, value, file and fix."
    f = write(env, unlearn("lr: 1e-3x"))
    with pytest.raises(BaldroError) as e: check_runs(f, env)
    msg = str(e.value)
    assert "unlearn__tiny-llama__NPO__" in msg and "lr='1e-3x' is not a number" in msg
    assert f"Fix: write lr: 1.0e-5 (a number > 0) in {f}" in msg
    rc, err = dry_run(f, capsys)
    assert rc == 2
    assert_one_clear_message(err, f, "lr='1e-3x'", "Fix:")

# (grid axes, parameter=value as the message shows it, the entry's defaults); OLD behaviour in the comment
RANGE_FAULTS = [
    ("beta: 0", "beta=0", "model: tiny-llama, objective: NPO"),                 # OLD: bare ZeroDivisionError in the kernel
    ("epochs: -1", "epochs=-1", "model: tiny-llama, objective: NPO"),           # OLD: good message, but after the run started
    ("batch_size: 0", "batch_size=0", "model: tiny-llama, objective: NPO"),     # OLD: idem
    ("batch_size: 2.5", "batch_size=2.5", "model: tiny-llama, objective: NPO"), # OLD: failed in the kernel
    ("grad_accum: 0", "grad_accum=0", "model: tiny-llama, objective: NPO"),     # OLD: after the run started
    ("beta_dv: 0", "beta_dv=0", "model: tiny-llama, objective: NPO, reweighting: dv"),       # OLD: message without the file
    ("ratio: 1.5", "ratio=1.5", "model: tiny-llama, objective: NPO, reweighting: group"),    # OLD: message without the file
    ("seed: -1", "seed=-1", "model: tiny-llama, objective: NPO"),               # OLD: failed in the kernel (numpy seed)
    ("seed: 'one'", "seed='one'", "model: tiny-llama, objective: NPO"),
    ("eval_rows: 0", "eval_rows=0", "model: tiny-llama, objective: NPO"),       # OLD: an empty evaluation after training
    ("max_new_tokens: 0", "max_new_tokens=0", "model: tiny-llama, objective: NPO"),
    ("dtype: fp16", "dtype='fp16'", "model: tiny-llama, objective: NPO"),       # OLD: refused by load_model, in the kernel
    ("gradient_checkpointing: 'yes'", "gradient_checkpointing='yes'", "model: tiny-llama, objective: NPO"),
    ("refresh_every: -1", "refresh_every=-1", "model: tiny-llama, objective: NPO, reweighting: dv, pool: forget_set"),
]

@pytest.mark.parametrize("axes,shown,defaults", RANGE_FAULTS, ids=[x[1] for x in RANGE_FAULTS])
def test_type_and_range_faults_refused_at_dry_run(env, capsys, axes, shown, defaults):
    f = write(env, unlearn(axes, defaults))
    with pytest.raises(BaldroError) as e: check_runs(f, env)
    msg = str(e.value)
    key = shown.split("=")[0]
    assert f"- unlearn__tiny-llama__" in msg and f": {shown} " in msg, msg
    assert f"Fix: write {key}: " in msg and f"in {f}." in msg, msg
    rc, err = dry_run(f, capsys)
    assert rc == 2
    assert_one_clear_message(err, f, shown, "Fix:")

def test_faults_in_finetune_and_retain_eval_entries(env):
    "The schema covers every notebook, not only unlearn."
    f = write(env, "grid:\n  - kind: finetune\n    axes: {model: tiny-llama, stage: [full, retain99], warmup_ratio: 2}\n"
                   "  - kind: retain_eval\n    axes: {model: tiny-llama, max_new_tokens: 0, eval_batch_size: '8x'}\n")
    with pytest.raises(BaldroError) as e: check_runs(f, env)
    msg = str(e.value)
    assert "finetune__tiny-llama__full__" in msg and "warmup_ratio=2 is out of range" in msg
    assert "retain_eval__tiny-llama__" in msg and "max_new_tokens=0" in msg and "eval_batch_size='8x' is not a number" in msg
    assert msg.startswith(f"4 problem(s) found in {f}")   # two finetune runs, one retain_eval run with two faults

def test_null_only_where_it_means_something(env):
    "null is allowed where the notebook's default is None or null has a meaning (preset's lr, every eval row); not for seed."
    ok = write(env, unlearn("lr: null, epochs: null, eval_rows: null, beta: null"))
    check_runs(ok, env)
    bad = write(env, unlearn("seed: null"), "bad.yaml")
    with pytest.raises(BaldroError, match=r"seed=null is not allowed"): check_runs(bad, env)

def test_ratio_on_a_dv_run_is_refused(env, capsys):
    "OLD: `ratio` given to a DV run was ignored yet recorded in results.csv. NEW: `grid.run_method` → "
    "`training.method_from_params` refuses a parameter that does not apply to the method, at validation."
    f = write(env, unlearn("ratio: 0.5", "model: tiny-llama, objective: NPO, reweighting: dv"))
    with pytest.raises(BaldroError) as e: check_runs(f, env)
    assert "BalDRO-DV+NPO" in str(e.value) and "'ratio' does not apply to reweighting 'dv'" in str(e.value)
    rc, err = dry_run(f, capsys)
    assert rc == 2 and "'ratio' does not apply" in err and str(f) in err

# --- 2. degenerate params files -----------------------------------------------------------------------------------

DEGENERATE = [
    # (name, file text, what the message says); OLD behaviour in the comment
    ("empty_file", "", "the params file is empty"),                               # OLD: `- unlearn__76e7ff71: 'model'`
    ("comments_only", "# nothing here\n", "the params file is empty"),
    ("grid_empty", "grid: []\n", "`grid` lists no entries"),                     # OLD: exit 0, nothing run, nothing said
    ("axis_empty", unlearn("seed: []"), "grid entry 3 (kind: unlearn): `seed: []` is an empty list"),   # OLD: exit 0 silently
    ("no_kind", "grid:\n  - axes: {model: tiny-llama}\n", "grid entry 1: every grid entry needs a `kind`"),
    ("no_model", "grid:\n  - kind: unlearn\n    axes: {objective: NPO}\n",      # OLD: `- unlearn__NPO__abbb6cdc: 'model'`
     "no `model`: every unlearn run needs one. Fix: add `model: tiny-llama`"),
    ("all_excluded", HEAD + "  - kind: unlearn\n    axes: {model: tiny-llama, objective: NPO}\n    exclude: [{objective: NPO}]\n",
     "drop every point"),
    ("invalid_yaml", "grid:\n  - kind: unlearn\n    axes: {model: [tiny-llama, seed: 0\n",   # OLD: 74-line traceback, no file name
     "is not valid YAML: while parsing a flow sequence (line 3, column 19)"),
    ("not_a_mapping", "- kind: unlearn\n", "a params file must hold a YAML mapping"),
]

@pytest.mark.parametrize("name,text,says", DEGENERATE, ids=[d[0] for d in DEGENERATE])
def test_degenerate_files(env, capsys, name, text, says):
    f = write(env, text, f"{name}.yaml")
    with pytest.raises(BaldroError) as e: check_runs(f, env)
    assert says in str(e.value) and str(f) in str(e.value), str(e.value)
    rc, err = dry_run(f, capsys)
    assert rc == 2
    assert_one_clear_message(err, f, says)

def test_invalid_yaml_is_one_line_with_file_and_line(env, capsys):
    f = write(env, "grid:\n  - kind: unlearn\n    defaults: {model: tiny-llama\n    axes: {seed: [0]}\n")
    rc, err = dry_run(f, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"params file {f} is not valid YAML" in err and "line 3" in err

def test_a_repeated_yaml_key_is_refused_at_dry_run(env, capsys):
    "OLD (63a97b3): `{lr: 1.0e-3, lr: 3.0e-3}` kept the last value and said nothing. NEW: an error naming the key and both lines."
    f = write(env, unlearn("seed: [0, 1]", "model: tiny-llama, objective: NPO, lr: 1.0e-3, lr: 3.0e-3"))
    rc, err = dry_run(f, capsys)
    assert rc == 2 and not (env/"outputs/runs").exists()
    assert_one_clear_message(err, f, "is not valid YAML", "found the key 'lr' a second time", "first at line 7", "Fix: correct")
    assert len(err.splitlines()) == 1, err

def test_a_local_path_the_notebook_would_take_for_a_hub_id_is_refused(env, capsys):
    "OLD: `target_dir: outputs/models/tiny-llama/full` (no ./) passed the dry run; the kernel failed with HFValidationError."
    f = write(env, "kind: unlearn\nmodel: tiny-llama\nobjective: NPO\ntarget_dir: outputs/models/tiny-llama/full\n")
    rc, err = dry_run(f, capsys)
    assert rc == 2 and not (env/"outputs/runs").exists()
    assert_one_clear_message(err, f, "target_dir='outputs/models/tiny-llama/full' is neither a path", "Fix: write target_dir: ../outputs/models/tiny-llama/full")

MINI = HEAD + """  - kind: miniature
    defaults: {model: tiny-llama, objective: NPO, %s}
"""

@pytest.mark.parametrize("field,shown", [
    ("seeds: [0, 1, 1]", "seeds lists 1 twice"),                       # OLD: its pair counted twice in the statistics
    ("seeds: [0, -2]", "seeds: seed=-2 is out of range"),                     # OLD: found by the kernel, after loading the model
    ("lr_grid: [1.0e-3, fast]", "lr_grid: lr='fast' is not a number"),          # OLD: found by the kernel
    ("variants: [{reweighting: mean}, {reweighting: dvv}]", "is not a mapping with a known `reweighting`"),   # OLD: after calibration
    ("variants: [{reweighting: mean}, {reweighting: mean}]", "twice"),
])
def test_miniature_lists_are_checked_at_dry_run(env, capsys, field, shown):
    f = write(env, MINI % field)
    rc, err = dry_run(f, capsys)
    assert rc == 2 and not (env/"outputs/runs").exists()
    assert_one_clear_message(err, f, "miniature__tiny-llama__NPO__", shown)

# --- 3. --jobs ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["0", "-3", "two"])
def test_jobs_below_one_is_an_argparse_error(env, capsys, jobs):
    "OLD: `--jobs 0` / `--jobs -3` silently became 1. NEW: argparse's usage error (exit status 2) naming --jobs."
    f = write(env, unlearn("seed: 0"))
    for cmd in (["run", str(f)], ["study"]):
        with pytest.raises(SystemExit) as e: main([*cmd, "--dry-run", "--jobs", jobs])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --jobs: must be" in err and jobs in err, err
    assert main(["run", str(f), "--dry-run", "--jobs", "2"]) == 0

# --- the schema covers what the notebooks and the model loader accept ----------------------------------------------

def test_schema_covers_every_notebook_parameter():
    for name in ("finetune", "retain_eval", "unlearn"):
        declared = notebook_params(ROOT/"nbs/experiments"/f"{name}.ipynb")
        assert set(declared) <= set(PARAM_SCHEMA), sorted(set(declared) - set(PARAM_SCHEMA))

def test_schema_choices_match_the_model_loader():
    from baldro_nb import models
    assert PARAM_SCHEMA["dtype"].choices == models._DTYPES
    assert PARAM_SCHEMA["attn_implementation"].choices == models._ATTN

def test_shipped_grids_still_validate(tmp_path, monkeypatch):
    "The three shipped grids load and validate (hub targets and retain models are not local artefacts)."
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for g in ("study_tiny", "paper_tofu", "fork_study"):
        runs = load_runs(ROOT/"params"/f"{g}.yaml")
        validate(runs, ROOT, tmp_path/"outputs")
        assert runs
