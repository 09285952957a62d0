"""The replication rule, simulated on synthetic studies through the report's own code (`comparisons.paired_comparisons`,
`comparisons.positive_control`): how often it claims an effect that is not there, and how often it finds one that is.

Each synthetic study has the default study's shape: 2 model pairs x 3 seeds (pair k's seeds 1000 k + 0, 1, 2), one
comparison (a variant against its base), the primary endpoint only. Paired difference of seed s in pair p:
    d = effect + u_p + e_ps,   e_ps ~ N(0, 1) (the seed noise),   u_p ~ N(0, s_int) (an effect that differs by pair)
with a seed effect of +-2 shared by both arms of a pair (it cancels in the difference, as in the study).
"""
import numpy as np, pandas as pd, pytest
from baldro_nb.comparisons import paired_comparisons, positive_control, GAIN, LOSS

N = 200                      # synthetic studies per condition
PAIRS, SEEDS = (0, 1), (0, 1, 2)
# The positive control of the published study (params/study_tiny.manifest.json's draw, report/answers.csv): pooled
# MU(NPO) - MU(forget-only) = 0.688; the sd of its six per-seed differences around their pair means (4 df) = 0.0523;
# so the control is 0.688 / 0.0523 = 13.1 seed sd. (Large: forget-only NPO ends with model utility 0 in every seed.
# The rule's power for smaller effects is printed by test_power_curve; each comparison's own smallest detectable
# effect is in the report.)
CONTROL_SIZE = 0.6879818791 / 0.0523441339

def _study(rng, effect, s_int=0.0, col="log10_fq_primary", objective="NPO", variants=("base", "BalDRO-DV")):
    rows = []
    for p in PAIRS:
        u = rng.normal(0, s_int)
        for s in SEEDS:
            seed_fx, e = rng.normal(0, 2), rng.normal(0, 1)
            rows += [dict(model="m", objective=objective, variant=variants[0], pair=p, seed=1000 * p + s, **{col: seed_fx}),
                     dict(model="m", objective=objective, variant=variants[1], pair=p, seed=1000 * p + s, **{col: seed_fx + effect + u + e})]
    return pd.DataFrame(rows)

def claim_rate(effect, s_int=0.0, n=N, seed=0):
    rng = np.random.default_rng(seed)
    verdicts = [paired_comparisons(_study(rng, effect, s_int)).verdict.iloc[0] for _ in range(n)]
    return float(np.mean([v in (GAIN, LOSS) for v in verdicts])), float(np.mean([v == GAIN for v in verdicts]))

def test_no_effect_false_claims_at_most_5_percent():
    rate, _ = claim_rate(0.0)
    print(f"no effect in any pair: false gain/loss in {rate:.1%} of {N} studies")
    assert rate <= 0.05

def test_pair_varying_effect_is_the_stated_limitation():
    # an effect that is +u in one pair and -u' in the other (mean 0), as large as the seed noise: two pairs cannot
    # tell it from a real effect; the rate is stated in nbs/15a_comparisons.ipynb (about 10 %), not hidden
    rate, _ = claim_rate(0.0, s_int=1.0, seed=1)
    print(f"mean-zero effect varying by pair (sd = seed sd): false gain/loss in {rate:.1%} of {N} studies")
    assert rate <= 0.15

def test_planted_control_sized_effect_is_found_80_percent():
    _, gain = claim_rate(CONTROL_SIZE, seed=2)
    print(f"planted effect of the control's size ({CONTROL_SIZE:.2f} seed sd): gain in {gain:.1%} of {N} studies")
    assert gain >= 0.80

def test_planted_effect_through_the_control_code():
    # the control's own function, with the control's endpoint and arms: a planted effect is reproduced, none is not
    rng = np.random.default_rng(3)
    hits = [positive_control(_study(rng, CONTROL_SIZE, col="mu_final", variants=("forget-only", "base")))["verdict"] for _ in range(100)]
    nulls = [positive_control(_study(rng, 0.0, col="mu_final", variants=("forget-only", "base")))["verdict"] for _ in range(100)]
    assert np.mean([h == "reproduced" for h in hits]) >= 0.80 and np.mean([h == "reproduced" for h in nulls]) <= 0.05


def test_power_curve():
    # not a bar: how often the rule finds effects of 1, 2 and 3 seed sd (printed for the report's readers and the notes)
    rates = {d: claim_rate(d, n=100, seed=4)[1] for d in (1.0, 2.0, 3.0)}
    print("power of the rule (2 pairs x 3 seeds, no pair variation): " + ", ".join(f"{d:g} sd: {r:.0%}" for d, r in rates.items()))
    assert rates[1.0] <= rates[2.0] <= rates[3.0] and rates[3.0] >= 0.8
