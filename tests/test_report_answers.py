"""The report's answers follow the intervals: built from a synthetic study whose miniature has a planted paired effect
(NPO: BalDRO-DV adds 0.5 to log10 FQ in every seed of both model pairs, ± 0.03) and none (WGA), the HTML report must say "gain" for the first,
"no detectable difference" for the second, and state the positive control as reproduced."""
import os, re, html as H

os.environ.setdefault("MPLBACKEND", "Agg")
for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"

from baldro_nb.report import build_report
from baldro_nb.testing import make_synthetic_study, make_synthetic_miniature


def _answers(page: str) -> str:
    "The text of the report's 'The answers' section (up to the next h2)."
    i = page.index("The answers"); j = page.index("<h2", i + 1)
    return re.sub(r"\s+", " ", H.unescape(re.sub(r"<[^>]+>", " ", page[i:j])))


def test_report_answers_gain_for_a_planted_effect_and_no_difference_without(tmp_path):
    out = tmp_path/"outputs"
    csv = make_synthetic_study(out, n_forget=8, epochs=1, seeds=(0,), audit=False)
    make_synthetic_miniature(out/"runs", {"NPO": 0.5, "WGA": 0.0})
    page = build_report(csv, out/"runs", tmp_path/"report").read_text()
    ans = _answers(page)
    npo = re.search(r"BalDRO-DV\+NPO \(paper objective\): (gain|loss|no detectable difference)", ans)
    wga = re.search(r"BalDRO-DV\+WGA \(not in the paper\): (gain|loss|no detectable difference)", ans)
    assert npo and npo.group(1) == "gain", ans
    assert wga and wga.group(1) == "no detectable difference", ans
    assert "the design detects" in ans and "Positive control" in ans and "reproduced" in ans and "not reproduced" not in ans, ans
    # every verdict word in the answers carries an interval
    for m in re.finditer(r"(gain|loss): Δ log10 FQ ([^;(]+)", ans): assert re.search(r"\[[-+]\d", m.group(2)), m.group(0)
    assert "mini_paired.png" in page or "data:image/png" in page
    # the same verdicts, machine-readable, next to the report
    import pandas as pd
    rows = pd.read_csv(tmp_path/"report"/"answers.csv")
    v = {(r.kind, r.objective, r.variant): r.verdict for r in rows.itertuples()}
    assert v[("comparison", "NPO", "BalDRO-DV")] == "gain" and v[("comparison", "WGA", "BalDRO-DV")] == "no detectable difference", v
    assert v[("control", "NPO", "base vs forget-only")] == "reproduced", v
    # discovery, replication and pooled, each with an interval, for every comparison
    assert rows[["discovery", "discovery_lo", "replication", "replication_hi", "estimate", "lo", "hi"]].notna().all().all(), rows
    # the report shows the per-pair table and the control's per-seed values
    assert "Does it depend on the model pair?" in page and "pair 0" in page and "pair 1" in page
    assert "The positive control, seed by seed" in page and "forget-only" in page
