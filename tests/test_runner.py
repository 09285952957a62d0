"""Integration tests of the runner (nbs/11_grid, 12_forkserver, 13_execution, 14_cli): resume after SIGKILL, failures that do not stop the grid,
validation before compute, the parameters tag through nbdev_clean, no absolute paths, parallel and SLURM (submitit
local) executors, and the shipped params files. Fixture notebooks (papermill's style) stand in for the experiments."""
import csv, json, os, re, shlex, shutil, signal, subprocess, sys, time
from pathlib import Path

import nbformat
import papermill as pm
import psutil
import pytest

from baldro_nb.core import BaldroError, read_yaml
from baldro_nb.grid import NAME_CHECKS, load_runs, notebook_params
from baldro_nb.execution import run_grid
from baldro_nb.testing import make_fixture_nb, make_fixture_project

ROOT = Path(__file__).resolve().parent.parent
BALDRO = str(Path(sys.executable).with_name("baldro"))


def _grid(n_unlearn=6, sleep=0.0, fail_seed=None):
    include = [{"objective": "GradAscent", "seed": fail_seed, "fail": True}] if fail_seed is not None else []
    return {"defaults": {"model": "tiny-llama"},
            "grid": [{"kind": "finetune", "axes": {"stage": ["full", "retain99"]}},
                     {"kind": "retain_eval"},
                     {"kind": "unlearn", "defaults": {"sleep": sleep},
                      "axes": {"objective": ["NPO"], "seed": list(range(n_unlearn))}, "include": include}]}


def _rows(out):
    return list(csv.DictReader(open(out/"results.csv")))


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.delenv("BALDRO_OUTPUTS", raising=False)
    return make_fixture_project(tmp_path/"proj")


def _write(p, spec):
    import yaml
    p.write_text(yaml.safe_dump(spec)); return p


def _fork_servers(runner: int):
    """pids of the running fork servers (`python -m baldro_nb.forkserver`) that the runner of pid `runner` started, and of
    the kernels forked from them (same command line and environment, $BALDRO_FORK_PARENT): another job's are left out."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if "baldro_nb.forkserver" not in " ".join(p.info["cmdline"] or ()): continue
        try:
            if p.environ().get("BALDRO_FORK_PARENT") == str(runner): out.append(p.pid)
        except psutil.Error: pass
    return out


def _survivors(runner: int, within: float = 20.0) -> dict:
    """Fork-server processes of runner `runner` still there after waiting up to `within` s, with their state and parent.
    A SIGKILLed process that has torch loaded can take a while to exit on a busy machine; a leaked one stays (seen once:
    a kernel forked as its server died, fixed in forkserver._die_with_parent). Empty = all gone."""
    t0 = time.time()
    while True:
        left = _fork_servers(runner)
        if not left or time.time() - t0 > within: break
        time.sleep(0.2)
    state = {}
    for p in left:
        try: proc = psutil.Process(p); state[p] = [proc.status(), proc.ppid()]
        except psutil.Error: pass
    return state


@pytest.mark.parametrize("warm", [False, True], ids=["cold-kernels", "warm-kernels"])
def test_sigkill_then_resume_every_run_exactly_once(proj, warm):
    out = proj/"outputs"; grid = _write(proj/"grid.yaml", _grid(n_unlearn=6, sleep=1.5))
    p = subprocess.Popen([BALDRO, "run", str(grid), "--jobs", "1"] + (["--warm-kernels"] if warm else []), cwd=proj,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 240:  # wait until the grid is half-way through the unlearning runs
        done = list((out/"runs").glob("unlearn__*/metrics.json")) if (out/"runs").exists() else []
        if len(done) >= 2: break
        assert p.poll() is None, "runner ended before it could be killed"
        time.sleep(0.2)
    servers = _fork_servers(p.pid)
    assert bool(servers) == warm
    os.kill(p.pid, signal.SIGKILL); p.wait()
    finished_before = {d.parent.name for d in (out/"runs").glob("*/metrics.json")}
    assert 5 <= len(finished_before) < 9  # 3 producers + ≥2 unlearning, not all 9
    # the killed worker dies with its parent (PR_SET_PDEATHSIG); its kernel follows
    assert not _survivors(p.pid)  # the fork server and its kernels died with the runner
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "already finished: skipped" in r.stdout
    rows = _rows(out)
    ids = [x["run_id"] for x in rows]
    assert len(ids) == 9 and len(set(ids)) == 9 and ids == sorted(ids)
    assert all(x["status"] == "ok" for x in rows)
    # runs finished before the kill were not executed again
    log = (out/"executions.log").read_text().split()
    for rid in finished_before:
        if rid.startswith("unlearn__"): assert log.count(f"../outputs/runs/{rid}") == 1



def _hold_lock(path):
    "Another process holding the lock `path` (as another runner's worker holds its run's) until it is killed."
    code = "import sys\nfrom baldro_nb.core import file_lock\nwith file_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()"
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_runner_gives_up_on_a_run_another_process_holds(proj, monkeypatch):
    """OLD: a second runner waited on a run folder's lock for as long as the other runner's run took (hours).
    NEW: at most RUN_LOCK_TIMEOUT_S, then an error naming the run, the lock file and the process holding it, and the fix;
    nothing starts, and the folder of the run in flight is left as it is."""
    from baldro_nb import execution as X
    monkeypatch.setattr(X, "RUN_LOCK_TIMEOUT_S", 0.5); monkeypatch.chdir(proj)   # execute_run changes directory
    out = (proj/"outputs").resolve(); spec = _grid(n_unlearn=1)
    run = next(r for r in load_runs(spec, proj, out) if r["kind"] == "finetune")
    d = out/"runs"/run["run_id"]; d.mkdir(parents=True)
    (d/"status.json").write_text(json.dumps({"run_id": run["run_id"], "kind": "finetune", "status": "running"}))
    holder = _hold_lock(d/".lock")
    try:
        t0 = time.time()
        with pytest.raises(BaldroError) as e: run_grid(spec, root=proj, progress=False)
        assert time.time() - t0 < 10
        m = str(e.value)
        assert f"run {run['run_id']} is being run by another process: its lock {d/'.lock'} is held by pid {holder.pid} (" in m, m
        assert "(waited 0.5 s). Fix: let that runner finish" in m, m
        assert [x.name for x in (out/"runs").iterdir()] == [run["run_id"]]          # nothing started
        # a run the other process took after this runner looked: the worker gives up the same way, writing nothing
        st = X.execute_run(run, proj, out)
        assert st["status"] == "error" and f"is held by pid {holder.pid} (" in st["error"], st
        assert json.loads((d/"status.json").read_text())["status"] == "running" and sorted(os.listdir(d)) == [".lock", "status.json"]
    finally:
        holder.kill(); holder.wait()

def test_failing_run_keeps_notebook_and_error_row(proj):
    out = proj/"outputs"
    st = run_grid(_grid(n_unlearn=2, fail_seed=7), root=proj, jobs=2, progress=False)
    assert sorted(s["status"] for s in st) == ["error"] + ["ok"]*5
    rows = _rows(out)
    err = [x for x in rows if x["status"] == "error"]
    assert len(err) == 1 and "RuntimeError: deliberate failure" in err[0]["error"]
    nb = nbformat.read(out/"runs"/err[0]["run_id"]/"run.ipynb", as_version=4)
    assert nb.metadata.papermill.exception is True
    assert any("deliberate failure" in json.dumps(c.get("outputs", [])) for c in nb.cells)
    assert not (out/"runs"/err[0]["run_id"]/"metrics.json").exists()
    assert sum(x["status"] == "ok" for x in rows) == 5


def test_executed_notebooks_have_no_absolute_paths(proj):
    out = proj/"outputs"
    run_grid(_grid(n_unlearn=1, fail_seed=3), root=proj, progress=False)
    for d in (out/"runs").iterdir():
        text = (d/"run.ipynb").read_text()
        for prefix in (str(proj.resolve()), str(proj), sys.prefix, str(Path.home())):
            assert prefix not in text, (d.name, prefix)
        md = nbformat.read(d/"run.ipynb", as_version=4).metadata.papermill
        assert not md.input_path.startswith("/") and not md.output_path.startswith("/")
        assert not any(str(v).startswith("/") for v in md.parameters.values())
        for f in ("params.yaml", "env.json", "command.txt"): assert str(proj.resolve()) not in (d/f).read_text()


def test_command_txt_reproduces_the_run(proj):
    out = proj/"outputs"
    run_grid(_grid(n_unlearn=1), root=proj, progress=False)
    d = next((out/"runs").glob("unlearn__*"))
    before = json.loads((d/"metrics.json").read_text())
    (d/"metrics.json").unlink()
    words = shlex.split((d/"command.txt").read_text())   # e.g. OMP_NUM_THREADS=1 NPY_DISABLE_CPU_FEATURES='X86_V4 ...' papermill ...
    i = words.index("papermill"); env = dict(w.split("=", 1) for w in words[:i]); cmd = words[i:]
    subprocess.run([str(Path(sys.executable).with_name("papermill")), *cmd[1:], "--no-progress-bar"], cwd=proj,
                   check=True, capture_output=True, env={**os.environ, **env})
    assert json.loads((d/"metrics.json").read_text()) == before


def test_command_txt_runs_as_written_from_paths_with_spaces(tmp_path, monkeypatch):
    "OLD (63a97b3): command.txt joined paths unquoted, so an outputs folder `out put ü` split into words. NEW: shell-quoted."
    monkeypatch.delenv("BALDRO_OUTPUTS", raising=False)
    root = make_fixture_project(tmp_path/"my proj é"); out = root/"out put ü"
    run_grid({"kind": "finetune", "model": "tiny-llama", "stage": "full"}, root=root, outputs=out, progress=False)
    d = next((out/"runs").glob("finetune__*")); before = (d/"metrics.json").read_text(); (d/"metrics.json").unlink()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", (d/"command.txt").read_text()], cwd=root, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (d/"metrics.json").read_text() == before


def _err(spec, proj):
    with pytest.raises(BaldroError) as e: run_grid(spec, root=proj, progress=False)
    assert not (proj/"outputs/runs").exists(), "something ran before validation failed"
    return str(e.value)


def test_validation_stops_before_compute(proj):
    g = _grid(n_unlearn=1)
    g["grid"][2]["defaults"]["learning_rte"] = 1e-5
    assert "unknown parameter(s) ['learning_rte']" in _err(g, proj) and "Fix:" in _err(g, proj)
    g = _grid(n_unlearn=1); g["grid"][2]["axes"]["objective"] = ["NPO", "NPX"]
    m = _err(g, proj); assert "unknown objective 'NPX'" in m and "SimNPO" in m
    g = _grid(n_unlearn=1); g["grid"][0]["axes"]["model"] = ["tiny-llama", "tiny-gpt"]
    m = _err(g, proj); assert "unknown model 'tiny-gpt'" in m and "tiny-qwen3" in m
    g = _grid(n_unlearn=1); g["grid"][2]["axes"]["reweighting"] = ["dro"]
    assert "unknown reweighting 'dro'" in _err(g, proj)
    g = _grid(n_unlearn=1); del g["grid"][0]  # no finetune runs: no target model, no retain model
    m = _err(g, proj)
    assert "target model outputs/models/tiny-llama/full does not exist" in m and "add a `finetune` run" in m
    g = _grid(n_unlearn=1); del g["grid"][1]  # no retain_eval run: no retain log
    assert "add a `retain_eval` run" in _err(g, proj)


def test_missing_parameters_tag_stops_before_compute(proj):
    nbp = proj/"nbs/experiments/unlearn.ipynb"
    nb = nbformat.read(nbp, as_version=4); nb.cells[0].metadata.pop("tags"); nbformat.write(nb, nbp)
    m = _err(_grid(n_unlearn=1), proj)
    assert "has no cell tagged `parameters`" in m and "allowed_cell_metadata_keys = tags" in m


def test_cli_exit_codes_and_dry_run(proj):
    grid = _write(proj/"grid.yaml", _grid(n_unlearn=2))
    r = subprocess.run([BALDRO, "run", str(grid), "--dry-run"], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("todo") == 5 and not (proj/"outputs/runs").exists()
    bad = _write(proj/"bad.yaml", {"grid": [{"kind": "unlearn", "axes": {"model": ["nope"]}}]})
    r = subprocess.run([BALDRO, "run", str(bad)], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown model 'nope'" in r.stderr
    # --only keeps the runs it needs
    r = subprocess.run([BALDRO, "run", str(grid), "--dry-run", "--only", "unlearn__*__1__*"], cwd=proj,
                       capture_output=True, text=True)
    assert r.stdout.count("todo") == 4, r.stdout


def test_slurm_path_through_submitit_local_executor(proj):
    out = proj/"outputs"
    st = run_grid(_grid(n_unlearn=2, fail_seed=5), root=proj, executor="submitit-local", progress=False)
    assert sorted(s["status"] for s in st) == ["error"] + ["ok"]*5
    assert len(_rows(out)) == 6 and any((out/"submitit").iterdir())


def test_nbdev_clean_keeps_parameters_tag(tmp_path):
    # a copy of each experiment notebook (and a fixture) inside the project, cleaned with the project's settings
    srcs = sorted((ROOT/"nbs/experiments").glob("*.ipynb")) if (ROOT/"nbs/experiments").exists() else []
    fx = make_fixture_nb(tmp_path/"fx.ipynb", {"a": 1}, "b = a")
    tmpdir = ROOT/"nbs/_tmp_clean_test"; tmpdir.mkdir(exist_ok=True)
    try:
        copies = [shutil.copy(s, tmpdir/s.name) for s in [*srcs, fx]]
        for c in copies:
            nb = nbformat.read(c, as_version=4)
            for cell in nb.cells: cell.metadata["collapsed"] = True
            nbformat.write(nb, c)
            subprocess.run([str(Path(sys.executable).with_name("nbdev_clean")), "--fname", str(c)], cwd=ROOT, check=True,
                           capture_output=True)
            nb = nbformat.read(c, as_version=4)
            assert not any("collapsed" in cell.metadata for cell in nb.cells), "nbdev_clean did not run"
            assert pm.inspect_notebook(str(c)), f"{Path(c).name}: parameters tag lost by nbdev_clean"
    finally:
        shutil.rmtree(tmpdir)


@pytest.mark.parametrize("name", ["study_tiny", "paper_tofu", "fork_study"])
def test_shipped_params_expand_and_name_known_things(name):
    f = ROOT/"params"/f"{name}.yaml"
    if not f.exists(): pytest.skip(f"{f.name} not written yet")
    runs = load_runs(f)
    assert len({r["run_id"] for r in runs}) == len(runs), "duplicate runs"
    for r in runs:
        for key, chk in NAME_CHECKS.items():
            if r["params"].get(key) is not None: chk(r["params"][key])
        nb = ROOT/"nbs"/r["notebook"]
        if nb.exists():
            declared = notebook_params(nb)
            assert declared and not set(r["params"]) - set(declared), (r["run_id"], set(r["params"]) - set(declared))


@pytest.mark.parametrize("name", ["unlearn", "retain_eval", "finetune", "miniature"])
def test_experiment_parameters_cells_parse_completely(name):
    "papermill silently drops a parameter whose line it cannot parse (e.g. a '=' in its comment): count them."
    nbp = ROOT/"nbs/experiments"/f"{name}.ipynb"
    if not nbp.exists(): pytest.skip(f"{nbp.name} not written yet")
    nb = nbformat.read(nbp, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [l.split("=")[0].split(":")[0].strip() for l in cell.source.splitlines() if re.match(r"^\w+\s*(:[^=]*)?=", l)]
    assert sorted(pm.inspect_notebook(str(nbp))) == sorted(assigned)
    assert "out_dir" in assigned


def test_cell_timeout_in_a_warm_kernel_is_an_error_row_and_leaves_no_process(proj):
    "A run that outlives --timeout in a forked kernel: interrupted and killed through the fork path, recorded, grid goes on."
    spec = _grid(n_unlearn=1)
    spec["grid"][-1]["include"] = [{"objective": "NPO", "seed": 7, "sleep": 30.0}]
    t0 = time.time()
    st = run_grid(spec, root=proj, jobs=2, progress=False, warm_kernels=True, timeout=4)
    assert time.time() - t0 < 120
    by = {s["run_id"]: s for s in st}
    slow = [s for rid, s in by.items() if "__7__" in rid][0]
    assert slow["status"] == "error" and "CellTimeoutError" in slow["error"]
    assert sum(s["status"] == "ok" for s in st) == len(st) - 1
    assert not _survivors(os.getpid())   # run_grid ran in this process: it started the fork server
