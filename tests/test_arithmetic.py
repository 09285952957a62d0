"""The runner pins each run's CPU arithmetic (nbs/00_core `arithmetic_env`, nbs/13_execution `kernel_env`): inside a
run's kernel, warm (forked from the fork server) or cold, torch runs its AVX2 kernels with one thread, numpy's AVX-512
loops are off and MKL/oneDNN/OpenBLAS are capped, whatever the runner's own environment says; `--threads` and
`native` change exactly that. Checked inside the kernel, where the run computes."""
import json, os, sys
from pathlib import Path

import pytest

from baldro_nb.core import PINNED_ARITHMETIC, ARITHMETIC_VARS, cpu_info
from baldro_nb.execution import run_grid
from baldro_nb.testing import make_fixture_nb, make_fixture_project

PROBE = ("import json, pathlib\nfrom baldro_nb.core import arithmetic_state\n"
         "pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
         "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps(arithmetic_state()))")


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.delenv("BALDRO_OUTPUTS", raising=False)
    for v in ARITHMETIC_VARS: monkeypatch.delenv(v, raising=False)   # the runner must set them itself
    root = make_fixture_project(tmp_path/"proj")
    make_fixture_nb(root/"nbs/experiments/finetune.ipynb", {"model": "tiny-llama", "stage": "full", "out_dir": "."}, PROBE)
    return root


def _states(root, **kw):
    g = {"defaults": {"model": "tiny-llama"}, "grid": [{"kind": "finetune", "axes": {"stage": ["full", "retain99"]}}]}
    st = run_grid(g, root=root, jobs=2, progress=False, **kw)
    assert [s["status"] for s in st] == ["ok", "ok"], st
    return [json.loads(f.read_text()) for f in sorted((root/"outputs/runs").glob("*/metrics.json"))]


@pytest.mark.skipif("avx2" not in cpu_info()["simd"], reason="the AVX2 caps need an AVX2 CPU")
@pytest.mark.parametrize("warm", [True, False])
def test_pinned_arithmetic_is_in_force_inside_the_kernel(proj, warm):
    for s in _states(proj, warm_kernels=warm):
        assert s["torch_capability"] == "AVX2" and s["torch_threads"] == 1, s
        assert s["numpy_avx512"] is False, s
        assert s["env"] == {**PINNED_ARITHMETIC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, s


def test_threads_and_native_arithmetic(proj):
    import subprocess   # the capability torch picks with none of the caps (this process may have started with them)
    native = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                            env={k: v for k, v in os.environ.items() if k not in ARITHMETIC_VARS},
                            capture_output=True, text=True, check=True).stdout.strip()
    for s in _states(proj, warm_kernels=True, threads=2, pinned=False):
        assert s["torch_threads"] == 2 and s["torch_capability"] == native, s
        assert all(s["env"][k] is None for k in PINNED_ARITHMETIC), s
