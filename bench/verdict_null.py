#!/usr/bin/env python
"""How often does the replication rule (`comparisons.replicated_difference`) say gain or loss when nothing differs?

Per-seed paired differences are drawn from one normal distribution (N(0, 1): the null; N(2, 1): a true effect of 2
standard deviations), split into model pairs × seeds as a study would, 400 draws per design, 2000 bootstrap samples.
Two tables, each from its own generator (seed 1), so the numbers in nbs/15a_comparisons.ipynb are reproduced exactly:

  1. the bootstrap-only rule (the hierarchical bootstrap interval, before one-pair intervals were widened to Student's
     t) against the rule as it is, for 1 pair × 2, 3, 4 seeds, 2 × 2 and the tiny study's 2 × 3;
  2. the rule as it is, one model pair × 2, 3, 4, 6 seeds: null and effect of 2 standard deviations.

    python bench/verdict_null.py        # ~3 minutes on one core; the rates' standard error is about ±1.1 % (400 draws)
"""
import numpy as np
from baldro_nb.comparisons import (replicated_difference, hierarchical_ci, split_halves, replication_verdict, GAIN, LOSS)

N, BOOT = 400, 2000


def bootstrap_only(bp: dict, seed: int) -> str:
    disc, rep = split_halves(bp)
    kw = dict(n_boot=BOOT, seed=seed)
    return replication_verdict(hierarchical_ci(disc, **kw), hierarchical_ci(rep, **kw), hierarchical_ci(list(bp.values()), **kw))


def main():
    rng = np.random.default_rng(1)
    print("1. null: share of draws called gain or loss   (pairs x seeds: bootstrap only -> the rule as it is)")
    for P, n in [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3)]:
        old = new = 0
        for r in range(N):
            bp = {p: rng.standard_normal(n) for p in range(P)}
            old += bootstrap_only(bp, r) in (GAIN, LOSS)
            new += replicated_difference(bp, True, n_boot=BOOT, seed=r)["verdict"] in (GAIN, LOSS)
        print(f"   {P} x {n}: {old / N:6.1%} -> {new / N:6.1%}")
    rng = np.random.default_rng(1)
    print("2. one model pair, the rule as it is: null false-verdict rate, and gain rate for an effect of 2 sd")
    for n in (2, 3, 4, 6):
        fp = pw = 0
        for r in range(N):
            x = rng.standard_normal(n)
            fp += replicated_difference({0: x}, True, n_boot=BOOT, seed=r)["verdict"] in (GAIN, LOSS)
            pw += replicated_difference({0: x + 2}, True, n_boot=BOOT, seed=r)["verdict"] == GAIN
        print(f"   1 x {n}: null {fp / N:6.1%}, effect {pw / N:6.1%}")


if __name__ == "__main__":
    main()
