"""The notebooks in a real browser: `jupyter lab` from the project's environment (headless, a free port, a token, a
temporary Jupyter config/data/runtime dir so the user's setup is neither used nor touched), driven by headless Chromium
over the Chrome DevTools protocol (tests/_cdp.py). Each test opens a notebook in the JupyterLab page, runs all cells
with JupyterLab's own `notebook:run-all-cells` command, waits for the kernel to go idle and checks, from the page's
notebook model, that every code cell ran (has an execution count) without an error output, and that the kernel is the
project's Python (`sys.prefix`, the kernelspec's argv). The notebooks are copies in a temporary root: the tree is
never written (autosave is off as well). A notebook with a failing cell must be reported as failing."""
import ast, base64, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

import nbformat
import pytest

from baldro_nb.core import outputs_dir

from _cdp import Chromium, require_chrome   # tests/_cdp.py: the shared CDP client

ROOT = Path(__file__).resolve().parent.parent
LIB_NB = "nbs/01_vocab.ipynb"                 # small, no torch: a library notebook with its inline tests
UNLEARN_NB = "nbs/experiments/unlearn.ipynb"  # the experiment notebook; its parameters cell is the tiny smoke run
SHOT_DIR = outputs_dir()/"_test"/"jupyterlab"   # screenshots of the page after each run
OFFLINE = {v: "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
for k, v in OFFLINE.items(): os.environ[k] = v


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _settings(d: Path, plugin: str, values: dict):
    "A JupyterLab user setting in the temporary settings dir."
    p = d/"lab"/"user-settings"/f"{plugin}.jupyterlab-settings"; p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(values))


class Lab:
    "A `jupyter lab` server of this environment over a temporary root, config, data and runtime dir."
    def __init__(self, base: Path):
        self.root, self.base = base/"root", base
        cfg, data, runtime = base/"config", base/"data", base/"runtime"
        for d in (self.root, cfg, data, runtime, base/"ipython"): d.mkdir(parents=True, exist_ok=True)
        # the root is an nbdev project of its own (a library notebook's last cell runs nbdev_export: it writes here,
        # never to the tree's baldro_nb/); outputs (data, tiny models, caches) stay the tree's shared ones
        shutil.copy(ROOT/"settings.ini", self.root/"settings.ini"); (self.root/"nbs").mkdir()
        _settings(cfg, "@jupyterlab/docmanager-extension/plugin", {"autosave": False})
        _settings(cfg, "@jupyterlab/apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH",
                                                                 "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}
        env.update(OFFLINE, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_DATA_DIR=str(data), JUPYTER_RUNTIME_DIR=str(runtime),
                   IPYTHONDIR=str(base/"ipython"), BALDRO_OUTPUTS=os.environ.get("BALDRO_OUTPUTS") or str(ROOT/"outputs"),
                   MPLBACKEND="Agg", PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
        jupyter = Path(sys.executable).with_name("jupyter")
        # the kernelspecs this server sees: the user's are hidden (temporary data dir, no JUPYTER_PATH); python3 must
        # be this environment's own (ipykernel's spec in <sys.prefix>/share/jupyter/kernels, or the native one)
        self.kernelspecs = json.loads(subprocess.run([str(jupyter), "kernelspec", "list", "--json"], env=env,
                                                     capture_output=True, text=True, check=True).stdout)["kernelspecs"]
        self.log = open(base/"server.log", "w")
        self.proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}", "--expose-app-in-browser",
             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else [])],
            cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        end = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(self.api("status"), timeout=5): break
            except OSError:
                if self.proc.poll() is not None or time.time() > end:
                    raise RuntimeError(f"jupyter lab did not start:\n{(base/'server.log').read_text()[-3000:]}")
                time.sleep(0.5)

    def api(self, path): return f"http://127.0.0.1:{self.port}/api/{path}?token={self.token}"
    @property
    def url(self): return f"http://127.0.0.1:{self.port}/lab?token={self.token}"

    def close(self):
        try: urllib.request.urlopen(urllib.request.Request(self.api("shutdown"), method="POST"), timeout=10)
        except OSError: pass
        try: self.proc.wait(30)
        except subprocess.TimeoutExpired: self.proc.send_signal(signal.SIGTERM)
        try: self.proc.wait(15)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        self.log.close()


# JavaScript run in the JupyterLab page (window.jupyterapp, from --expose-app-in-browser)
JS_HELPERS = r"""
window.__t = {
  nbs: {},
  async open(path) {
    const app = window.jupyterapp;
    const w = await app.commands.execute('docmanager:open', {path, factory: 'Notebook', kernel: {name: 'python3'}});
    await w.context.ready; await w.sessionContext.ready;
    app.shell.activateById(w.id);
    this.nbs[path] = {w, run: null};
    return w.id;
  },
  status(path) {
    const s = this.nbs[path], k = s.w.sessionContext.session && s.w.sessionContext.session.kernel;
    return {kernel: k ? k.status : null, kernel_name: k ? k.name : null, run: s.run};
  },
  runAll(path) {
    const s = this.nbs[path];
    window.jupyterapp.shell.activateById(s.w.id);
    s.run = 'running';
    window.jupyterapp.commands.execute('notebook:run-all-cells', {semanticWidget: s.w.id, activate: true})
      .then(r => { s.run = r === false ? 'stopped' : 'done'; }, e => { s.run = 'failed: ' + e; });
    return true;
  },
  model(path) { return JSON.stringify(this.nbs[path].w.context.model.toJSON()); },
  async kernelPython(path) {
    const k = this.nbs[path].w.sessionContext.session.kernel;
    let out = '';
    const f = k.requestExecute({code: 'import sys, json; print(json.dumps([sys.prefix, sys.executable]))',
                                silent: false, store_history: false});
    f.onIOPub = m => { if (m.header.msg_type === 'stream') out += m.content.text; };
    await f.done;
    const specs = window.jupyterapp.serviceManager.kernelspecs.specs;
    return JSON.stringify({out, spec: specs.kernelspecs[k.name]});
  },
};
true
"""


class Page:
    "One JupyterLab tab in headless Chromium."
    def __init__(self, browser: Chromium, lab: Lab):
        self.b, self.lab = browser, lab
        self.sid = browser.new_page(1400, 1000)
        browser.send("Emulation.setFocusEmulationEnabled", {"enabled": True}, session=self.sid)
        browser.send("Page.navigate", {"url": lab.url}, session=self.sid)
        self.wait("!!(window.jupyterapp)", 120, "JupyterLab did not load window.jupyterapp")
        self.js("window.jupyterapp.restored.then(() => true)", await_promise=True, timeout=120)
        self.js(JS_HELPERS)

    def js(self, expr, await_promise=False, timeout=60):
        return self.b.evaluate(expr, self.sid, await_promise=await_promise, timeout=timeout)

    def wait(self, expr, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            try:
                v = self.js(expr)
                if v: return v
            except RuntimeError: pass
            time.sleep(0.3)
        raise TimeoutError(what)

    def run_notebook(self, path: str, timeout=600) -> dict:
        "Open `path` (relative to the server root), run all cells, wait for idle; the notebook as the page holds it."
        self.js(f"window.__t.open({json.dumps(path)})", await_promise=True, timeout=120)
        st = lambda: self.js(f"window.__t.status({json.dumps(path)})")
        end = time.time() + 120
        while st()["kernel"] != "idle":   # kernel started and idle before running
            assert time.time() < end, f"kernel of {path} never idle: {st()}"
            time.sleep(0.3)
        assert self.js(f"window.__t.runAll({json.dumps(path)})")
        end = time.time() + timeout
        while not (st()["run"] != "running" and st()["kernel"] == "idle"):
            assert time.time() < end, f"{path}: run-all did not finish in {timeout} s: {st()}"
            time.sleep(0.5)
        s = st()
        assert s["run"] in ("done", "stopped"), s   # 'stopped': a cell failed and run-all stopped there
        nb = nbformat.reads(self.js(f"window.__t.model({json.dumps(path)})"), as_version=4)
        nb.metadata["_test"] = {"run": s["run"], "kernel_name": s["kernel_name"],
                                "python": json.loads(self.js(f"window.__t.kernelPython({json.dumps(path)})",
                                                             await_promise=True))}
        SHOT_DIR.mkdir(parents=True, exist_ok=True)
        shot = self.b.send("Page.captureScreenshot", {"format": "png"}, session=self.sid)["data"]
        (SHOT_DIR/f"{Path(path).stem}.png").write_bytes(base64.b64decode(shot))
        return nb


def notebook_problems(nb) -> list[str]:
    "Every code cell that did not run (no execution count) or has an error output, as `cell <i>: <what>`."
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code" or not c.source.strip(): continue
        errs = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errs: out.append(f"cell {i}: {errs[0]['ename']}: {errs[0]['evalue']}")
        elif c.get("execution_count") is None: out.append(f"cell {i}: not executed")
    return out


def _check_python(nb, lab):
    ks = lab.kernelspecs["python3"]
    assert Path(ks["resource_dir"]).resolve().is_relative_to(Path(sys.prefix).resolve()), ks
    t = nb.metadata["_test"]
    prefix, exe = json.loads(t["python"]["out"])
    assert t["kernel_name"] == "python3"
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix), (prefix, sys.prefix)   # the project's environment
    assert Path(exe).parent == Path(sys.executable).parent, (exe, sys.executable)   # <env>/bin, not resolved
    # the spec's "python" is resolved by jupyter_client to the server's interpreter, which is this environment's
    assert t["python"]["spec"]["argv"][0] in ("python", "python3", sys.executable), t["python"]["spec"]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    exe = require_chrome()   # a missing browser fails here, with the fix (see tests/_cdp.py)
    lab = Lab(tmp_path_factory.mktemp("jupyterlab"))
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    b = Chromium(exe, profile)
    try:
        yield lab, Page(b, lab)
    finally:
        b.close(); lab.close(); shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def unlearn_copy(lab, tmp_path_factory):
    """The experiment notebook parameterised by papermill (its injected-parameters cell, nothing executed) to the
    tiny-llama target model, a retain log and a temporary output folder, copied into the server root."""
    from papermill import inspect_notebook
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    from baldro_nb.data import STUDY_SOURCE
    from baldro_nb.evaluation import eval_source, make_retain_reference
    from baldro_nb.finetune import ensure_tiny_finetuned
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    lab_, _ = lab
    d = tmp_path_factory.mktemp("unlearn")
    nb = load_notebook_node(str(ROOT/UNLEARN_NB))
    p = {k: ast.literal_eval(v["default"]) for k, v in inspect_notebook(str(ROOT/UNLEARN_NB)).items()}
    model, fs, rows, data = (p[k] for k in ("model", "forget_split", "eval_rows", "data_source"))
    assert (model, data) == ("tiny-llama", STUDY_SOURCE), "the parameters cell is no longer the tiny smoke run"
    # the same shared tiny models as tests/test_evaluation_tofu_mini.py (built once per machine, in outputs/models)
    target = ensure_tiny_finetuned(model, "full", source=data)
    retain = ensure_tiny_finetuned(model, "retain99", source=data)
    log = make_retain_reference(load_model(str(retain)).eval(), load_tokenizer(str(retain)), get_spec(model).template,
                                d/"retain_log", source=eval_source(fs, data, rows), forget_split=fs,
                                max_new_tokens=p["max_new_tokens"])
    nb = parameterize_notebook(nb, {"target_dir": str(target), "retain_log": str(log), "out_dir": str(d/"run")})
    dest = lab_.root/UNLEARN_NB; dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return UNLEARN_NB, d/"run"


def _copy(lab, rel):
    dest = lab.root/rel; dest.parent.mkdir(parents=True, exist_ok=True); shutil.copy(ROOT/rel, dest); return rel


# ---------------------------------------------------------------- tests
def test_library_notebook_runs_in_jupyterlab(lab):
    lab_, page = lab
    nb = page.run_notebook(_copy(lab_, LIB_NB), timeout=300)
    n_code = sum(c.cell_type == "code" for c in nbformat.read(ROOT/LIB_NB, as_version=4).cells)
    assert sum(c.cell_type == "code" for c in nb.cells) == n_code   # the page holds the whole notebook
    assert notebook_problems(nb) == []
    assert nb.metadata["_test"]["run"] == "done"
    _check_python(nb, lab_)
    assert (lab_.root/"baldro_nb"/"vocab.py").exists()   # its nbdev_export cell ran, inside the temporary root


def test_unlearn_notebook_runs_in_jupyterlab(lab, unlearn_copy):
    lab_, page = lab
    rel, run = unlearn_copy
    nb = page.run_notebook(rel, timeout=600)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert notebook_problems(nb) == []
    assert nb.metadata["_test"]["run"] == "done"
    _check_python(nb, lab_)
    m = json.loads((run/"metrics.json").read_text())   # the notebook's last cell wrote its done marker
    assert {"forget_quality", "model_utility"} <= set(m) and m["epochs_evaluated"] == [0, 1, 2], m


def test_a_failing_notebook_is_detected(lab):
    "A notebook whose second cell raises: the checker names that cell's error and the cell that never ran."
    lab_, page = lab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_markdown_cell("prose"),
                                         nbformat.v4.new_code_cell("raise ValueError('deliberate failure ' + str(x))"),
                                         nbformat.v4.new_code_cell("y = 2")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "python3",
                                                           "language": "python"}})
    nbformat.write(nb, lab_.root/"failing.ipynb")
    got = page.run_notebook("failing.ipynb", timeout=120)
    assert notebook_problems(got) == ["cell 2: ValueError: deliberate failure 1", "cell 3: not executed"]
    assert got.cells[0].execution_count == 1 and got.metadata["_test"]["run"] == "stopped"


def test_a_missing_browser_fails_with_the_fix(monkeypatch, tmp_path):
    "No browser is a visible failure naming the fix (the same message tools/test.sh prints), never a skip."
    import _cdp
    from _cdp import MISSING_CHROME, find_chrome
    monkeypatch.setenv("PATH", str(tmp_path)); monkeypatch.delenv("CHROME", raising=False)
    monkeypatch.setattr(_cdp, "MAC_APPS", ())
    assert find_chrome() is None
    with pytest.raises(pytest.fail.Exception) as e: require_chrome()
    assert str(e.value) == MISSING_CHROME
    for fix in ("sudo apt-get install -y chromium", "brew install --cask chromium", "CHROME=/path/to/chrome"):
        assert fix in MISSING_CHROME
    monkeypatch.setenv("CHROME", str(tmp_path/"no-such-browser"))
    with pytest.raises(pytest.fail.Exception) as e: require_chrome()
    assert "no-such-browser" in str(e.value) and MISSING_CHROME in str(e.value)
    fake = tmp_path/"my-chrome"; fake.write_text("#!/bin/sh\n"); fake.chmod(0o755)
    monkeypatch.setenv("CHROME", str(fake))
    assert require_chrome() == str(fake)
