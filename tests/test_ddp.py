"""DDP executed: `tools/launch.sh` with `configs/accelerate/cpu_ddp.yaml` runs nbs/experiments/unlearn.ipynb in two
CPU processes (gloo) end to end. Rank 0 alone evaluates and writes, rank 1 exits 0, the run folder has the files of a
one-process launch, and two processes at per-device batch B/2 end on the parameters of one process at batch B.

Why the parameters can agree: accelerate shards the *same* seeded permutation by whole per-device batches (rank r gets
batches r, r+2, ... of size B/2), so each micro-batch of the 2-process run is the micro-batch of the 1-process run,
split in two halves; the mean reweighting's gradient is an average over samples, and DDP averages the two halves'
gradients; `unlearn` sizes the warm-up by WORLD_SIZE. The run uses NPO with `alpha: 0` (forget term only): the retain
partner of a forget sample is drawn by a per-process generator in the order the process fetches its samples, so
with a retain term the two runs pair different retain samples (and the token-mean retain NLL does not split into
per-rank means either). What remains is float32 round-off from the different summation order: tolerance below.

A `sitecustomize` on PYTHONPATH (this test only) records every file each rank writes through `core.atomic_write` and
saves rank 0's final weights at exit, so the run folders stay as they are."""
import json, os, re, shutil, subprocess, sys, warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL, B = "tiny-llama", 4
TOL_MAX_ABS = 1e-4    # max |θ(1×B) − θ(2×B/2)| over all weights (float32 round-off; measured ~1e-6)
TOL_REL = 1e-3        # ‖θ(1×B) − θ(2×B/2)‖ / ‖θ(1×B) − θ₀‖: the difference against the update itself

HOOK = '''
import atexit, os, sys
if sys.argv and sys.argv[0].endswith("run.py") and os.environ.get("DDP_TEST_DIR"):
    _d, _rank = os.environ["DDP_TEST_DIR"], os.environ.get("RANK", "0")
    import baldro_nb.core as _core
    _aw = _core.atomic_write
    def atomic_write(path, *a, **k):
        with open(os.path.join(_d, "writes.txt"), "a") as f: f.write(f"{_rank} {os.path.abspath(path)}\\n")
        return _aw(path, *a, **k)
    _core.atomic_write = atomic_write
    def _dump():
        import __main__
        m = getattr(__main__, "lm", None)   # the experiment notebook's language model
        if m is not None and _rank == "0":
            import torch
            torch.save({k: v.detach().cpu().clone() for k, v in m.state_dict().items()}, os.path.join(_d, "weights.pt"))
    atexit.register(_dump)
'''


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    "The tiny target (shared fixture), a small retain log of the tiny retain model, and the sitecustomize hook."
    from baldro_nb.core import set_offline
    set_offline()
    from baldro_nb.data import STUDY_SOURCE
    from baldro_nb.evaluation import eval_source, make_retain_reference
    from baldro_nb.finetune import ensure_tiny_finetuned
    from baldro_nb.models import get_spec, load_model, load_tokenizer
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("ddp")
    target = ensure_tiny_finetuned(MODEL, "full", source=STUDY_SOURCE)
    retain = ensure_tiny_finetuned(MODEL, "retain99", source=STUDY_SOURCE)
    log = make_retain_reference(load_model(str(retain)).eval(), load_tokenizer(str(retain)), get_spec(MODEL).template,
                                d/"retain", source=eval_source("forget01", STUDY_SOURCE, 4), forget_split="forget01",
                                max_new_tokens=4)
    (d/"hook").mkdir(); (d/"hook"/"sitecustomize.py").write_text(HOOK)
    return dict(dir=d, target=target, retain_log=log, source=STUDY_SOURCE)


def _failure_excerpt(r) -> str:
    "What names a failed launch's cause: each rank's traceback and torchrun's root-cause block, then the output's tails."
    err = r.stderr
    tb = [err[m.start():m.start() + 2000] for m in re.finditer(r"Traceback \(most recent call last\)", err)][:2]
    root = err[err.find("Root Cause"):][:1200] if "Root Cause" in err else ""
    return "\n".join(["--- tracebacks ---", *tb, "--- torchrun root cause ---", root,
                      "--- stdout tail ---", r.stdout[-800:], "--- stderr tail ---", err[-1500:]])   # at most ~7.5k characters


def _launch(prep, name, batch_size, *accel):
    "tools/launch.sh with cpu_ddp.yaml: NPO, mean, forget term only, 3 optimizer steps (B·grad_accum = 8 of 40 QA each)."
    import yaml
    d = prep["dir"]/name; d.mkdir()
    params = dict(model=MODEL, objective="NPO", reweighting="mean", alpha=0.0, forget_split="forget01",
                  data_source=prep["source"], lr=3e-3, epochs=0.5, batch_size=batch_size, grad_accum=2, seed=0,
                  eval_rows=4, max_new_tokens=4, target_dir=str(prep["target"]), retain_log=str(prep["retain_log"]))
    (d/"params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(prep["dir"]/"hook"), "DDP_TEST_DIR": str(d), "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1",   # both runs: one thread per process (tiny matmuls; threads only contend)
           **({"GLOO_SOCKET_IFNAME": "lo"} if Path("/sys/class/net/lo").exists() else {})}   # gloo on loopback, whatever the host's network
    launch = lambda: subprocess.run(["bash", "tools/launch.sh", "configs/accelerate/cpu_ddp.yaml",
                                     "nbs/experiments/unlearn.ipynb", str(d/"params.yaml"), str(d/"run"), *accel],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    r = launch()
    if r.returncode != 0:
        # a 2-process launch has failed twice in ~15 suite runs, on code that passed before and after: 2026-12-01 a rank
        # aborted (SIGABRT) and the rerun passed; 2026-12-07 in CI torchrun reported a failed rank (its traceback was cut
        # from the report). One retry from a clean folder; a second failure fails the test. Both attempts'
        # whole output is kept next to the run, and the first one's cause is a warning in the suite's summary (seen even
        # when the retry passes); locally the launch passed 10 of 10 under a load of ~6 processes on 2 cores.
        (d/"first_attempt.log").write_text(r.stdout + "\n----- stderr -----\n" + r.stderr)
        warnings.warn(f"DDP launch failed (exit {r.returncode}); retrying once (log: {d/'first_attempt.log'}):\n"
                      f"{_failure_excerpt(r)}")   # shown in pytest's warnings summary even when the retry passes
        shutil.rmtree(d/"run", ignore_errors=True); (d/"writes.txt").unlink(missing_ok=True)
        r = launch()
    if r.returncode != 0:
        (d/"second_attempt.log").write_text(r.stdout + "\n----- stderr -----\n" + r.stderr)
        pytest.fail(f"DDP launch failed twice (exit {r.returncode}; logs in {d}):\n{_failure_excerpt(r)}", pytrace=False)
    writes = [l.split(" ", 1) for l in (d/"writes.txt").read_text().splitlines()]
    files = sorted(str(p.relative_to(d/"run")) for p in (d/"run").rglob("*") if p.is_file())
    steps = [json.loads(l) for l in (d/"run"/"steps.jsonl").read_text().splitlines() if l.strip()]
    return dict(dir=d/"run", out=r.stdout + r.stderr, writes=writes, files=files, steps=steps,
                weights=torch.load(d/"weights.pt"))


def test_two_cpu_processes_match_one_process(prepared):
    one = _launch(prepared, "one", B, "--cpu", "--num_processes", "1")
    two = _launch(prepared, "two", B // 2)
    assert one["out"].count("3 optimizer steps in") == 1 and two["out"].count("3 optimizer steps in") == 2   # both ranks trained
    # run folder: the same files; every file written by rank 0, metrics.json exactly once
    assert two["files"] == one["files"], (two["files"], one["files"])
    assert {"metrics.json", "steps.jsonl", "method.json", "TOFU_EVAL.json", "evals/epoch_0/TOFU_EVAL.json"} <= set(two["files"])
    assert {rank for rank, _ in two["writes"]} == {"0"}, two["writes"]
    assert sum(p.endswith("/metrics.json") for _, p in two["writes"]) == 1
    assert json.loads((two["dir"]/"metrics.json").read_text())["n_steps"] == len(two["steps"]) == len(one["steps"]) == 3
    # data order: rank 0 logs the first half of each of the 1-process micro-batches, at the same learning rates
    for s1, s2 in zip(one["steps"], two["steps"]):
        mbs = [s1["indices"][i:i + B] for i in range(0, len(s1["indices"]), B)]
        assert s2["indices"] == [i for mb in mbs for i in mb[:B // 2]], (s1["indices"], s2["indices"])
        assert s2["lr"] == pytest.approx(s1["lr"], rel=1e-12)
    # parameters: 1×B vs 2×B/2 after 3 optimizer steps, against the update from the target's weights
    from baldro_nb.models import load_model
    th0 = load_model(str(prepared["target"])).state_dict()
    vec = lambda sd: torch.cat([sd[k].detach().flatten().double() for k in sorted(th0)])
    t0, t1, t2 = vec(th0), vec(one["weights"]), vec(two["weights"])
    diff, upd = (t1 - t2).abs().max().item(), (t1 - t0).abs().max().item()
    rel = ((t1 - t2).norm() / (t1 - t0).norm()).item()
    print(f"\n1xB vs 2xB/2: max |dθ| {diff:.3g} (max update {upd:.3g}), ‖dθ‖/‖update‖ {rel:.3g}")
    assert upd > 1e-3                       # the runs did move the weights
    assert diff < TOL_MAX_ABS and rel < TOL_REL
