"""The runner under faults (nbs/13_execution, 12_forkserver, 07_training, 10_evaluation, 02_data): Ctrl-C stops a grid
cleanly and a resume redoes exactly the interrupted runs; a corrupt run file, a full disk, a read-only folder and a
runner killed between metrics.json and status.json lose nothing and stop nothing; a diverging run stops at its first
non-finite loss; a retain log that is not JSON and an empty data file are errors that name the file. Fixture
notebooks (`baldro_nb.testing`) stand in for the experiments, except for the tiny random Llama of the divergence tests."""
import csv, errno, json, math, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from baldro_nb.core import BaldroError, read_json, write_json
from baldro_nb.execution import run_grid
from baldro_nb.runfolder import list_runs, run_state
from baldro_nb.testing import make_fixture_nb, make_fixture_project

ROOT = Path(__file__).resolve().parent.parent
BALDRO = str(Path(sys.executable).with_name("baldro"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# the fixture unlearning notebook, plus: it records its kernel's pid, sleeps `sleep` s only while $FAULTS_SLOW is set
# (the first attempt), can ignore SIGINT (`deaf`: only a kill stops it) and can train a tiny random Llama (`lr`)
_W = ("import json, os, pathlib, time\n"
      "def _w(p, obj):\n    p = pathlib.Path(p); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(obj))\n")
UNLEARN = (_W + "open(f'{out_dir}/kernel.pid', 'w').write(str(os.getpid()))\n"
           "if deaf:\n    import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
           "if os.environ.get('FAULTS_SLOW'): time.sleep(sleep)\n"
           "assert os.path.isdir(f'../outputs/models/{model}/full') and os.path.exists(f'../outputs/retain_logs/{model}_retain99/TOFU_EVAL.json')\n"
           "if fail: raise RuntimeError('deliberate failure')\n"
           "if lr:\n"
           "    import types, torch\n"
           "    from transformers import LlamaConfig, LlamaForCausalLM\n"
           "    from baldro_nb.training import unlearn\n"
           "    torch.manual_seed(1)\n"
           "    m = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,\n"
           "                                     num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2))\n"
           "    g = torch.Generator().manual_seed(0)\n"
           "    item = lambda i: (lambda q, a: dict(input_ids=[2] + q + a + [1], labels=[-100] * (1 + len(q)) + a + [1], index=i))(\n"
           "        torch.randint(3, 100, (4,), generator=g).tolist(), torch.randint(3, 100, (3,), generator=g).tolist())\n"
           "    unlearn(m, types.SimpleNamespace(pad_token_id=0), [item(i) for i in range(8)], [item(100 + i) for i in range(16)], 'NPO',\n"
           "            out_dir, lr=lr, epochs=3, batch_size=2, grad_accum=1, warmup_epochs=0, disable_tqdm=True)\n"
           "open('../outputs/executions.log', 'a').write(out_dir + '\\n')\n"
           "_w(f'{out_dir}/metrics.json', {'forget_quality': seed / 10, 'model_utility': 0.5})")
UNLEARN_PARAMS = {"model": "tiny-llama", "objective": "NPO", "reweighting": "mean", "seed": 0, "fail": False, "sleep": 0.0,
                  "deaf": False, "lr": 0.0, "out_dir": "."}


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.delenv("BALDRO_OUTPUTS", raising=False)
    root = make_fixture_project(tmp_path/"proj")
    make_fixture_nb(root/"nbs/experiments/unlearn.ipynb", UNLEARN_PARAMS, UNLEARN)
    return root


def _artefacts(out):
    "What the finetune and retain_eval runs make, by hand: a grid of unlearning runs alone then validates."
    for stage in ("full", "retain99"): write_json(out/"models/tiny-llama"/stage/"config.json", {})
    write_json(out/"retain_logs/tiny-llama_retain99/TOFU_EVAL.json", {})


def _grid(seeds=(0, 1, 2), producers=True, special=None):
    "Producers (optional) + NPO unlearning runs over `seeds`; `special` = {seed: {param: value}} for some of them."
    g = [{"kind": "finetune", "axes": {"stage": ["full", "retain99"]}}, {"kind": "retain_eval"}] if producers else []
    special = special or {}
    inc = [{"objective": "NPO", "seed": int(s), **p} for s, p in special.items()]
    g.append({"kind": "unlearn", "axes": {"objective": ["NPO"], "seed": [s for s in seeds if s not in special]}, "include": inc})
    return {"defaults": {"model": "tiny-llama"}, "grid": g}


def _write(p, spec):
    p.write_text(yaml.safe_dump(spec)); return p


def _rows(out):
    return list(csv.DictReader(open(out/"results.csv")))


def _log(out):
    f = out/"executions.log"
    return [Path(l).name for l in f.read_text().split()] if f.exists() else []


def _stat(pid):
    "(status, process group) of a live process, None if it is gone (zombies count as gone)."
    try:
        st = psutil.Process(int(pid)).status()
        return None if st in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) else (st, os.getpgid(int(pid)))
    except (psutil.Error, ProcessLookupError): return None


def _group(pgid):
    return [p.pid for p in psutil.process_iter() if (s := _stat(p.pid)) and s[1] == pgid]


def _wait(cond, timeout, step=0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond(): return True
        time.sleep(step)
    return cond()


def _as_from_a_terminal():
    "In the child, before exec: SIGINT as a shell leaves it for a foreground job (default), whatever pytest inherited."
    # An ignored SIGINT survives fork and exec (Popen's restore_signals leaves it), and a non-interactive shell ignores it
    # in what it starts with `&` (`bash tools/test.sh &`, a CI step): the runner would then rightly ignore our Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(cmd, cwd, env=None):
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_from_a_terminal, env={**os.environ, **(env or {})})


def _start(proj, grid, *args, env=None):
    return _popen([BALDRO, "run", str(grid), *args], proj, env)


def _running(out, seed):
    "The run folder of unlearning seed `seed` once its kernel is executing the notebook, else None."
    hits = [d for d in (out/"runs").glob(f"unlearn__*__{seed}__*") if (d/"kernel.pid").exists()] if (out/"runs").exists() else []
    return hits[0] if hits else None


# ----------------------------------------------------------------------------------------------------------- Ctrl-C
def test_the_runner_gets_ctrl_c_even_when_pytest_ignores_sigint():
    "pytest itself started with SIGINT ignored (in the background of a script): the runner we start must not inherit it."
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try: p = _popen([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"], ROOT)
    finally: signal.signal(signal.SIGINT, old)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and out.strip() == "True", (out, err)


@pytest.mark.parametrize("warm", [False, True], ids=["cold-kernels", "warm-kernels"])
def test_ctrl_c_stops_the_grid_cleanly_and_resume_redoes_exactly_the_interrupted(proj, warm):
    out = proj/"outputs"
    grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1, 2, 3), special={2: {"sleep": 120.0}}))
    p = _start(proj, grid, "--jobs", "1", *(["--warm-kernels"] if warm else []), env={"FAULTS_SLOW": "1"})
    assert _wait(lambda: _running(out, 2) or p.poll() is not None, 240), "the slow run never started"
    slow = _running(out, 2); assert slow and p.poll() is None
    time.sleep(1.0)                                   # inside its 120 s sleep
    kernel = int((slow/"kernel.pid").read_text())
    t0 = time.time(); os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the runner's whole process group
    stdout, stderr = p.communicate(timeout=60)
    took = time.time() - t0
    assert p.returncode == 130 and took < 20, (p.returncode, took, stdout, stderr)
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert f"interrupted: {slow.name}" in stdout and "Resume with `baldro run grid.yaml`" in stdout, stdout
    assert "baldro: interrupted" in stderr, stderr
    # the running notebook ended, and nothing of the runner is left
    assert _wait(lambda: _stat(kernel) is None, 10), "the interrupted run's kernel is still alive"
    assert _wait(lambda: not _group(p.pid), 10), f"processes left in the runner's group: {_group(p.pid)}"
    # the interrupted run is recorded as such; its notebook (up to the interrupted cell) is whole JSON
    st = read_json(slow/"status.json")
    assert st["status"] == "interrupted" and run_state(slow).state == "interrupted" and not (slow/"metrics.json").exists()
    assert "KeyboardInterrupt" in (slow/"run.ipynb").read_text(); nbformat.read(slow/"run.ipynb", as_version=4)
    # finished runs are in results.csv; no run started after the interrupt
    finished = {d.name for d in (out/"runs").iterdir() if run_state(d).done}
    assert {r["run_id"] for r in _rows(out)} == finished and all(r["status"] == "ok" for r in _rows(out))
    assert {d.name for d in (out/"runs").iterdir()} == finished | {slow.name}
    assert len(finished) >= 3 and sorted(_log(out)) == sorted(f for f in finished if f.startswith("unlearn__"))
    assert f"This call finished {len(finished)} run(s)" in stdout
    # resume: exactly the interrupted run and the never-started ones
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(finished)} run(s) already finished: skipped" in r.stdout
    log = _log(out)
    assert len(log) == 4 and len(set(log)) == 4 and slow.name in log    # every unlearning run exactly once
    rows = _rows(out)
    assert len(rows) == 7 and all(x["status"] == "ok" for x in rows)


def test_ctrl_c_kills_a_kernel_that_ignores_it_then_second_ctrl_c_exits_at_once(proj):
    out = proj/"outputs"; _artefacts(out)
    grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1), producers=False, special={0: {"sleep": 120.0, "deaf": True}}))
    # a kernel deaf to SIGINT: killed INTERRUPT_GRACE_S after the Ctrl-C, the run still recorded as interrupted
    p = _start(proj, grid, env={"FAULTS_SLOW": "1"})
    assert _wait(lambda: _running(out, 0) or p.poll() is not None, 120); slow = _running(out, 0)
    time.sleep(1.5); kernel = int((slow/"kernel.pid").read_text())
    t0 = time.time(); os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and time.time() - t0 < 20, (p.returncode, time.time() - t0, stderr)
    assert _wait(lambda: _stat(kernel) is None, 5) and read_json(slow/"status.json")["status"] == "interrupted"
    assert "interrupted 1," in stdout and "Traceback" not in stdout + stderr, stdout + stderr
    # the second Ctrl-C does not wait for the grace period: the runner exits at once, the kernel dies with it
    p = _start(proj, grid, env={"FAULTS_SLOW": "1"})
    assert _wait(lambda: (slow/"status.json").exists() and read_json(slow/"status.json")["status"] == "running"
                 and (slow/"kernel.pid").exists() and int((slow/"kernel.pid").read_text()) != kernel, 120)
    time.sleep(1.5); kernel = int((slow/"kernel.pid").read_text())
    os.killpg(p.pid, signal.SIGINT); time.sleep(0.5)
    t0 = time.time(); os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 130 and time.time() - t0 < 3, (p.returncode, time.time() - t0)
    assert "second interrupt: exiting now" in stderr
    assert _wait(lambda: _stat(kernel) is None and not _group(p.pid), 10)
    assert run_state(slow).state == "incomplete"        # in flight, unrecorded: redone like an interrupted run
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and sorted(_log(out)) == sorted(d.name for d in (out/"runs").iterdir()), r.stdout + r.stderr
    assert all(x["status"] == "ok" for x in _rows(out)) and len(_rows(out)) == 2


# -------------------------------------------------------------------------------------------- corrupt run files
def test_corrupt_metrics_is_reported_and_redone_not_a_crash(proj):
    out = proj/"outputs"; _artefacts(out)
    grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1, 2), producers=False))
    assert subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True).returncode == 0
    bad = sorted((out/"runs").glob("unlearn__*"))[1]
    (bad/"metrics.json").write_text('{"forget_quality": 0.')            # cut short
    r = subprocess.run([BALDRO, "collect"], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"warning: {bad/'metrics.json'}: JSONDecodeError" in r.stderr and "redoes it" in r.stderr
    assert {x["run_id"] for x in _rows(out)} == {d.name for d in (out/"runs").iterdir()} - {bad.name}
    assert run_state(bad).state == "corrupt" and any(l.startswith(f"corrupt ") and l.endswith(bad.name) for l in list_runs(out))
    r = subprocess.run([BALDRO, "list"], cwd=proj, capture_output=True, text=True)   # the command says so too
    assert r.returncode == 0 and any(l.startswith("corrupt ") and l.endswith(bad.name) for l in r.stdout.splitlines()), r.stdout
    r = subprocess.run([BALDRO, "run", str(grid), "--dry-run"], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("todo") == 1 and f"todo  {bad.name}  (corrupt: " in r.stdout, r.stdout
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "2 run(s) already finished: skipped" in r.stdout and f"redoing {bad.name}" in r.stderr
    assert sorted(_log(out)) == sorted([*(d.name for d in (out/"runs").iterdir()), bad.name])   # only it ran again
    assert read_json(bad/"metrics.json")["forget_quality"] == 0.1 and (bad/"metrics.json.corrupt").exists()
    assert len(_rows(out)) == 3 and all(x["status"] == "ok" for x in _rows(out))


def test_metrics_without_status_is_done_and_recorded(proj):
    "A runner SIGKILLed between the notebook's metrics.json and its own status.json: done, recorded on the next run."
    out = proj/"outputs"
    grid = _grid(seeds=(0,))
    run_grid(grid, root=proj, progress=False)
    ft = next((out/"runs").glob("finetune__tiny-llama__full__*")); ul = next((out/"runs").glob("unlearn__*"))
    # what the kill leaves: status "running", the notebook still at papermill's partial path, the model not published
    shutil.move(out/"models/tiny-llama/full", ft/"model")
    shutil.move(ft/"run.ipynb", ft/".run.partial.ipynb")
    st = read_json(ft/"status.json"); write_json(ft/"status.json", {**st, "status": "running", "wall_s": None})
    (ul/"status.json").unlink()
    assert run_state(ft).state == "done" and run_state(ul).state == "done"
    assert {x["run_id"] for x in _rows(out)} >= {ft.name, ul.name}
    before = _log(out)
    st = run_grid(grid, root=proj, progress=False)
    assert st == [] and _log(out) == before                              # nothing ran again
    assert read_json(ft/"status.json")["status"] == "ok" and (ft/"run.ipynb").exists() and not (ft/".run.partial.ipynb").exists()
    assert os.readlink(out/"models/tiny-llama/full") == f"../../runs/{ft.name}/model"
    assert read_json(ul/"status.json")["status"] == "ok"
    assert len(_rows(out)) == 4 and all(x["status"] == "ok" for x in _rows(out))


# ---------------------------------------------------------------------------------------------------- I/O faults
SITECUSTOMIZE = '''
import errno, os
if os.environ.get("FAULTS_ENOSPC"):        # papermill's writes of that run's notebook: fine once, then a full disk
    import papermill.iorw as _io
    _orig, _n = _io.LocalHandler.write, [0]
    def write(self, buf, path):
        if os.environ["FAULTS_ENOSPC"] in str(path):
            _n[0] += 1
            if _n[0] > 1:
                _orig(self, buf[: len(buf) // 2], path)          # half a notebook reaches the disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return _orig(self, buf, path)
    _io.LocalHandler.write = write
'''


def test_disk_full_while_papermill_writes_is_an_error_row(proj, tmp_path):
    out = proj/"outputs"; _artefacts(out)
    grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1, 2), producers=False))
    victim = [l.split()[2] for l in subprocess.run([BALDRO, "run", str(grid), "--dry-run"], cwd=proj, capture_output=True,
                                                    text=True).stdout.splitlines() if "unlearn__" in l][1]
    (tmp_path/"site").mkdir(); (tmp_path/"site/sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "FAULTS_ENOSPC": victim, "PYTHONPATH": os.pathsep.join([str(tmp_path/"site"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    rows = {x["run_id"]: x for x in _rows(out)}
    assert len(rows) == 3 and [x["status"] for x in rows.values()].count("ok") == 2
    e = rows[victim]["error"]
    assert rows[victim]["status"] == "error" and e.startswith("OSError: [Errno 28] No space left on device"), e
    assert "cut short (kept as .run.partial.ipynb, not run.ipynb)" in e, e
    d = out/"runs"/victim
    assert not (d/"run.ipynb").exists() and read_json(d/"status.json")["status"] == "error"
    with pytest.raises(ValueError): json.loads((d/".run.partial.ipynb").read_text())   # the cut file, kept aside
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)   # space again
    assert r.returncode == 0 and all(x["status"] == "ok" for x in _rows(out)), r.stdout + r.stderr
    nbformat.read(d/"run.ipynb", as_version=4); assert not (d/".run.partial.ipynb").exists()


def _read_only(path):
    "Make folder `path` read-only for this process: a read-only tmpfs over it as root (root ignores modes), else mode 555."
    if IS_ROOT:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
        if r.returncode: pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
        return lambda: subprocess.run(["umount", str(path)], check=True)
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


def test_read_only_run_folder_is_an_error_row_and_the_grid_goes_on(proj):
    out = proj/"outputs"; _artefacts(out)
    grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1, 2), producers=False))
    victim = [l.split()[2] for l in subprocess.run([BALDRO, "run", str(grid), "--dry-run"], cwd=proj, capture_output=True,
                                                    text=True).stdout.splitlines() if "unlearn__" in l][0]
    d = out/"runs"/victim; d.mkdir(parents=True)
    undo = _read_only(d)
    try:
        r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert f"FAILED {victim}: " in r.stdout
        rows = {x["run_id"]: x for x in _rows(out)}
        assert len(rows) == 3 and [x["status"] for x in rows.values()].count("ok") == 2
        e = rows[victim]["error"]                           # a row from the runner: the folder could not record it
        assert rows[victim]["status"] == "error" and rows[victim]["method"] == "NPO", rows[victim]
        assert e.startswith(("OSError: [Errno 30] Read-only file system: '<repo>/outputs/runs/",
                             "PermissionError: [Errno 13] Permission denied: '<repo>/outputs/runs/")), e
    finally: undo()
    r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and all(x["status"] == "ok" for x in _rows(out)) and len(_rows(out)) == 3, r.stdout + r.stderr


@pytest.mark.skipif(not IS_ROOT, reason="needs root to mount a small tmpfs")
def test_full_disk_no_traceback_no_half_files_then_resume(proj):
    out = proj/"outputs"; out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        _artefacts(out)
        grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1), producers=False))
        fd = os.open(out/"filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True: os.write(fd, b"x" * 4096)
        except OSError as e: assert e.errno == errno.ENOSPC
        finally: os.close(fd)
        r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert r.stdout.count("No space left on device") >= 2 and "FAILED unlearn__" in r.stdout
        assert "could not write" in r.stderr and "results.csv: OSError: [Errno 28] No space left on device" in r.stderr
        for d in (out/"runs").iterdir() if (out/"runs").exists() else []:   # no run left "running", no half-written notebook
            assert run_state(d).state in ("error", "incomplete"), (d, run_state(d))
            assert not (d/"run.ipynb").exists() or nbformat.read(d/"run.ipynb", as_version=4)
        (out/"filler").unlink()
        r = subprocess.run([BALDRO, "run", str(grid)], cwd=proj, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and len(_rows(out)) == 2 and all(x["status"] == "ok" for x in _rows(out)), r.stdout + r.stderr
    finally: subprocess.run(["umount", str(out)])


# ---------------------------------------------------------------------------------------------------- divergence
def test_diverging_run_stops_at_its_first_non_finite_loss_and_says_so(proj):
    "lr 1e8: the run's error row names the divergence (step, loss), and training stopped there (3 epochs x 4 steps scheduled)."
    out = proj/"outputs"; _artefacts(out)
    st = run_grid(_grid(seeds=(0, 1), producers=False, special={0: {"lr": 1e8}}), root=proj, progress=False)
    assert sorted(s["status"] for s in st) == ["error", "ok"]
    row = next(x for x in _rows(out) if x["status"] == "error"); assert "__0__" in row["run_id"]
    assert row["error"].startswith("BaldroError: training diverged at step ") and "Fix: lower lr (it was 1e+08)" in row["error"], row
    step = int(row["error"].split("step ")[1].split(":")[0])
    steps = [json.loads(l) for l in open(out/"runs"/row["run_id"]/"steps.jsonl")]
    assert len(steps) == step < 12 and not math.isfinite(steps[-1]["loss"]) and all(math.isfinite(l["loss"]) for l in steps[:-1])
    assert "retain log" not in row["error"]


# ------------------------------------------------------------------------------------- unreadable inputs named
def test_retain_log_not_json_names_the_path_and_the_fix(tmp_path, monkeypatch):
    from baldro_nb.evaluation import epoch0_cache_dir, load_retain_auc, retain_truth_ratios
    monkeypatch.setenv("BALDRO_OUTPUTS", str(tmp_path/"outputs"))
    log = tmp_path/"retain_logs/m_retain99/TOFU_EVAL.json"; log.parent.mkdir(parents=True); log.write_text('{"forget_truth_ratio": ')
    (tmp_path/"target").mkdir(); (tmp_path/"target/w.bin").write_text("x")
    for f in (lambda: epoch0_cache_dir("m", tmp_path/"target", log, forget_split="forget01"),   # the unlearn notebook's first read
              lambda: retain_truth_ratios(log, "forget01", 40), lambda: load_retain_auc(log.parent)):
        with pytest.raises(BaldroError) as e: f()
        assert f"retain log {str(log)!r} is not valid JSON (JSONDecodeError" in str(e.value) and "Fix: evaluate the retain model" in str(e.value)


def test_empty_data_file_names_the_file(tmp_path):
    from baldro_nb.data import hub_readme, load_tofu
    (tmp_path/"README.md").write_text(hub_readme(["forget01", "retain99"]))
    (tmp_path/"retain99.jsonl").write_text('{"question": "Q?", "answer": "A."}\n'); (tmp_path/"forget01.jsonl").write_text("")
    with pytest.raises(BaldroError) as e: load_tofu("forget01", tmp_path)
    assert f"its data file {str(tmp_path/'forget01.jsonl')!r} is empty" in str(e.value) and "Fix:" in str(e.value)
    assert len(load_tofu("retain99", tmp_path)) == 1


def test_sigterm_to_the_runner_alone_stops_it_like_ctrl_c(proj):
    "A signal for the runner process only (kill PID, a scheduler's SIGTERM): it interrupts its workers' notebooks itself."
    out = proj/"outputs"; _artefacts(out)
    grid = _write(proj/"grid.yaml", _grid(seeds=(0, 1), producers=False, special={0: {"sleep": 120.0}}))
    p = _start(proj, grid, env={"FAULTS_SLOW": "1"})
    assert _wait(lambda: _running(out, 0) or p.poll() is not None, 120); slow = _running(out, 0)
    time.sleep(1.0); kernel = int((slow/"kernel.pid").read_text())
    t0 = time.time(); os.kill(p.pid, signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and time.time() - t0 < 20 and "Traceback" not in stdout + stderr, (p.returncode, stdout, stderr)
    assert f"interrupted: {slow.name}" in stdout and read_json(slow/"status.json")["status"] == "interrupted"
    assert _wait(lambda: _stat(kernel) is None and not _group(p.pid), 10)
