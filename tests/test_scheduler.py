"""The local executor's scheduling (`execution.schedule`, nbs/13_execution) with a fake executor of threads: no barrier
between levels, a run never before the runs it depends on, at most `jobs` in flight, nothing new after a stop. No
notebook runs and nothing trains; every expectation below is worked out by hand from the dependency graph."""
import threading, time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait as wait_futures

import pytest

from baldro_nb.core import BaldroError
from baldro_nb.execution import schedule
from baldro_nb.grid import plan, resolve_run, run_dependencies

TIMEOUT = 10.0   # a fake run that waits for another one gives up after this long (the test then fails, never hangs)


class FakePool:
    "Runs each id's `work` (a callable, default: return at once) in a thread; logs ('start'|'end', id) and the ids in flight."
    def __init__(self, work=None, on_end=None):
        self.ex = ThreadPoolExecutor(max_workers=8)   # more threads than jobs: only `schedule` may hold runs back
        self.work, self.on_end = work or {}, on_end or (lambda rid: None)
        self.log, self.lock, self.ids = [], threading.Lock(), {}
        self.in_flight, self.max_in_flight = set(), 0

    def _note(self, what, rid):
        with self.lock: self.log.append((what, rid))

    def _run(self, rid):
        self.work.get(rid, lambda: None)()
        self._note("end", rid)
        return rid

    def submit(self, rid):
        self._note("start", rid)
        with self.lock:
            assert rid not in self.in_flight, f"{rid} submitted twice"
            self.in_flight.add(rid); self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        f = self.ex.submit(self._run, rid); self.ids[f] = rid
        return f

    def wait(self, fs):
        done, _ = wait_futures(fs, timeout=TIMEOUT, return_when=FIRST_COMPLETED)
        assert done, "no fake run finished in time"
        for f in done:
            rid = f.result()
            with self.lock: self.in_flight.discard(rid)
            self.on_end(rid)
        return done

    def at(self, what, rid): return self.log.index((what, rid))

    def starts(self): return [rid for what, rid in self.log if what == "start"]


def test_no_barrier_between_levels():
    # levels [[A (slow), B (fast)], [C needs B], [D needs A]], two jobs: C must start while A still runs. A finishes
    # only once C has started (or after TIMEOUT, which the asserts below then catch): a barrier would deadlock into it.
    c_started = threading.Event()
    pool = FakePool(work={"A": lambda: c_started.wait(TIMEOUT), "C": c_started.set})
    started = schedule(["A", "B", "C", "D"], {"C": {"B"}, "D": {"A"}}, 2, pool.submit, pool.wait)
    assert c_started.is_set()
    assert started == ["A", "B", "C", "D"]
    assert pool.at("start", "C") < pool.at("end", "A")      # no barrier: C ran while A (level 0) had not finished
    assert pool.at("end", "B") < pool.at("start", "C")      # but after its own dependency
    assert pool.at("end", "A") < pool.at("start", "D")
    assert len(pool.log) == 8                               # each run started and ended once


def test_run_never_starts_before_its_dependencies():
    # a diamond plus a chain, a run that depends on an already-done run (X, not in the order) and a free one:
    #   F1 -> R -> U1, U2 ; F2 -> U1 ; U2 -> V ; W needs X (done) ; Z free
    deps = {"R": {"F1"}, "U1": {"R", "F2"}, "U2": {"R"}, "V": {"U2"}, "W": {"X"}, "Z": set()}
    order = ["F1", "F2", "W", "Z", "R", "U1", "U2", "V"]   # the plan's levels, flattened
    pool = FakePool(work={rid: (lambda: time.sleep(0.01)) for rid in order})
    started = schedule(order, deps, 3, pool.submit, pool.wait)
    assert sorted(started) == sorted(order) and pool.starts() == started
    for rid, ds in deps.items():
        for d in ds - {"X"}:
            assert pool.at("end", d) < pool.at("start", rid), f"{rid} started before {d} ended: {pool.log}"
    # with one job the runs go exactly in the order given (every run's dependencies come earlier in it)
    pool1 = FakePool()
    assert schedule(order, deps, 1, pool1.submit, pool1.wait) == order


def test_ready_runs_start_in_plan_order():
    # four independent runs, two jobs: the first two start at once, then one per finished run, always in `order`
    pool = FakePool()
    assert schedule(["d", "b", "c", "a"], {}, 2, pool.submit, pool.wait) == ["d", "b", "c", "a"]
    assert pool.starts()[:2] == ["d", "b"]


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_at_most_jobs_in_flight(jobs):
    # six independent runs that each wait a little: the pool has 8 threads, so only `schedule` keeps the count at `jobs`
    pool = FakePool(work={rid: (lambda: time.sleep(0.05)) for rid in "abcdef"})
    schedule(list("abcdef"), {}, jobs, pool.submit, pool.wait)
    assert pool.max_in_flight == jobs                       # reached (6 ready runs), never exceeded
    assert sorted(pool.starts()) == list("abcdef")


def test_stop_requested_nothing_new_starts():
    # stop requested when B finishes: C (ready, B done) and D (waits for A) never start; A, running, is waited for
    stop = threading.Event()
    a_go = threading.Event()
    pool = FakePool(work={"A": lambda: a_go.wait(TIMEOUT)},
                    on_end=lambda rid: (stop.set(), a_go.set()) if rid == "B" else None)
    started = schedule(["A", "B", "C", "D"], {"C": {"B"}, "D": {"A"}}, 2, pool.submit, pool.wait, stopped=stop.is_set)
    assert started == ["A", "B"]
    assert pool.starts() == ["A", "B"]
    assert ("end", "A") in pool.log                         # schedule returned only after A came back
    # stopped before anything started: nothing starts, nothing is waited for
    pool0 = FakePool()
    assert schedule(["A", "B"], {}, 2, pool0.submit, pool0.wait, stopped=lambda: True) == []
    assert pool0.log == []


def test_a_failed_run_still_releases_its_dependants():
    # as with levels: the dependant of a failed run starts and fails on its own (its notebook names the missing artefact)
    outcome = {}
    def wait(fs):
        done = FakePool.wait(pool, fs)
        for f in done: outcome[f.result()] = "error" if f.result() == "B" else "ok"
        return done
    pool = FakePool()
    assert schedule(["B", "C"], {"C": {"B"}}, 1, pool.submit, wait) == ["B", "C"]
    assert outcome == {"B": "error", "C": "ok"}


def test_bad_input_is_a_clear_error():
    with pytest.raises(BaldroError, match="dependency cycle among runs"):
        schedule(["A", "B"], {"A": {"B"}, "B": {"A"}}, 1, None, None)
    with pytest.raises(BaldroError, match="jobs must be a whole number >= 1"):
        schedule(["A"], {}, 0, None, None)
    with pytest.raises(BaldroError, match="run ids listed twice"):
        schedule(["A", "A"], {}, 1, None, None)


def test_dependencies_of_a_grid_match_the_plan():
    # the rule the executor schedules by is the one `plan` orders by: retain_eval <- finetune retain99;
    # unlearn <- finetune full + retain_eval
    runs = [resolve_run(x) for x in [
        {"kind": "finetune", "params": {"model": "m", "stage": "full"}},
        {"kind": "finetune", "params": {"model": "m", "stage": "retain99"}},
        {"kind": "retain_eval", "params": {"model": "m"}},
        {"kind": "unlearn", "params": {"model": "m", "objective": "NPO"}}]]
    full, r99, ret, npo = (r["run_id"] for r in runs)
    deps = run_dependencies(runs)
    assert deps == {full: set(), r99: set(), ret: {r99}, npo: {full, ret}}
    order = [r["run_id"] for lv in plan(runs) for r in lv]
    assert order == sorted([full, r99]) + [ret, npo]
    pool = FakePool()
    schedule(order, deps, 2, pool.submit, pool.wait)
    assert pool.at("end", r99) < pool.at("start", ret) < pool.at("end", ret) < pool.at("start", npo)
    assert pool.at("end", full) < pool.at("start", npo)
