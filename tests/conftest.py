"""Shared by every test module. tools/test.sh runs the suite on two pytest-xdist workers; several modules share the
tiny-llama target (`full`) and retain model (`retain99`) of the study's data, built once per machine into
outputs/models under a file lock (`finetune.ensure_tiny_finetuned`). Left to the tests, the first worker that needs
them builds both in turn while the other waits on the lock; here each worker starts by building one of the two, so
they are built at once."""
import os

import pytest

# the modules whose fixtures call ensure_tiny_finetuned("tiny-llama", stage, source=STUDY_SOURCE)
SHARES_TINY_LLAMA = {"test_ddp.py", "test_evaluation_tofu_mini.py", "test_gpu_tiny_e2e.py", "test_jupyterlab.py",
                     "test_miniature.py", "test_tiny_models.py"}
STAGES = ("full", "retain99")


def worker_stage(worker: str, n_workers: int):
    "The stage worker `gwK` builds first: K even -> full, odd -> retain99; None without two or more workers."
    if n_workers < 2 or not worker.startswith("gw"): return None
    return STAGES[int(worker[2:]) % len(STAGES)]


@pytest.fixture(scope="session", autouse=True)
def _shared_tiny_models_at_once(request):
    stage = worker_stage(os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    if stage is None or not any(item.path.name in SHARES_TINY_LLAMA for item in request.session.items): return
    from baldro_nb.core import set_offline
    set_offline()
    from baldro_nb.data import STUDY_SOURCE
    from baldro_nb.finetune import ensure_tiny_finetuned
    ensure_tiny_finetuned("tiny-llama", stage, source=STUDY_SOURCE)
