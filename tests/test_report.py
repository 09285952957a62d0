"""The HTML report, end to end: built from a synthetic, schema-true study with papermill + nbconvert, opened in headless
Chromium (Chrome DevTools protocol over a pipe: no extra Python package), checked for loaded images, hidden inputs and
console errors; wide tables scroll inside their own boxes at 1300 px while the page does not; built twice for
byte-identical figures; built from empty and partial tables."""
import hashlib, json, os, shutil, tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ[v] = "1"

from baldro_nb.core import outputs_dir
from baldro_nb.report import build_report
from baldro_nb.tables import load_results
from baldro_nb.testing import make_synthetic_study

from _cdp import Chromium, require_chrome   # tests/_cdp.py: the shared CDP client

FIGURES = ("fq_vs_mu", "bars_by_objective", "per_epoch", "dro_weights", "forget_trajectories",
           "mini_paired", "mini_fq_steps", "mini_fq_mu", "mini_samples")   # the miniature's: placeholders here (no miniature runs)
SHOT_DIR = outputs_dir()/"_test"/"report"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    csv = make_synthetic_study(d/"outputs", n_forget=16, epochs=2, seeds=(0, 1))
    return csv, d/"outputs"/"runs"


@pytest.fixture(scope="module")
def built(study, tmp_path_factory):
    csv, runs = study
    out = tmp_path_factory.mktemp("report")
    return build_report(csv, runs, out)


PAGE_PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({w: i.naturalWidth, h: i.naturalHeight, ok: i.complete,
                                                   src: i.src.slice(0, 30)})),
  inputs: document.querySelectorAll('.jp-CodeCell .jp-InputArea, .jp-CodeCell .jp-Cell-inputWrapper, .jp-InputPrompt, ' +
                                    '.jp-InputArea-editor, .jp-Editor, .input_area, .CodeMirror').length,
  markdown: document.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown').length,
  code_cells: document.querySelectorAll('.jp-CodeCell').length,
  text: document.body.innerText,
  commands: Array.from(document.querySelectorAll('details pre')).map(e => e.textContent).join(' '),
  height: document.documentElement.scrollHeight})"""


def open_in_chromium(html: Path, shot: Path):
    exe = require_chrome()
    with tempfile.TemporaryDirectory() as profile:
        b = Chromium(exe, profile)
        try:
            sid = b.new_page(1280, 1000)
            b.send("Page.navigate", {"url": html.resolve().as_uri()}, session=sid)
            b.wait_event("Page.loadEventFired", timeout=60); b.drain(1.0)
            probe = json.loads(b.send("Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True},
                                      session=sid)["result"].get("value") or "null") or {}
            assert probe, "the page probe failed to evaluate"
            import base64
            shot.parent.mkdir(parents=True, exist_ok=True)
            top = b.send("Page.captureScreenshot", {"format": "png"}, session=sid)["data"]
            shot.write_bytes(base64.b64decode(top))
            full = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": 0, "y": 0, "width": 1280, "height": min(probe["height"], 16000), "scale": 0.5}},
                          session=sid)["data"]
            shot.with_name(shot.stem + "_full.png").write_bytes(base64.b64decode(full))
            b.drain(0.3)
        finally: b.close()
    errors = [e for e in b.events if (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    return probe, errors


def test_report_in_headless_chromium(built):
    shot = SHOT_DIR/"screenshot.png"
    probe, errors = open_in_chromium(built, shot)
    assert errors == [], f"console errors: {json.dumps(errors)[:2000]}"
    imgs = probe["images"]
    assert len(imgs) >= len(FIGURES), imgs
    assert all(i["ok"] and i["w"] > 0 and i["h"] > 0 for i in imgs), imgs
    assert all(i["src"].startswith("data:image/") for i in imgs), "images must be embedded"
    assert probe["code_cells"] > 0 and probe["markdown"] > 0, probe   # the selectors match this template
    assert probe["inputs"] == 0, "input cells are visible"
    t = probe["text"]
    for s in ("from baldro_nb", "import ", "figure(fig_"): assert s not in t, f"source code {s!r} visible in the page"
    for s in ("Does BalDRO's gain transfer", "Does it hold across models", "Audit", "How to reproduce"):
        assert s in t, s
    assert probe["commands"].count("papermill nbs/") >= 40, probe["commands"][:500]
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


WIDE = 1300   # issue 23: the paired comparisons (20-odd columns) are wider than a window this wide
TABLE_PROBE = """(() => {
  const tables = Array.from(document.querySelectorAll('table')).map(t => {
    const box = t.parentElement, r = box.getBoundingClientRect(), was = box.scrollLeft;
    box.scrollLeft = 100000; const scrolled = box.scrollLeft; box.scrollLeft = was;
    return {boxed: box.classList.contains('baldro-table-box'), overflow_x: getComputedStyle(box).overflowX,
            cols: t.rows.length ? t.rows[0].cells.length : 0, head: t.rows.length ? t.rows[0].innerText.slice(0, 60) : '',
            table_w: Math.ceil(t.getBoundingClientRect().width), box_w: box.clientWidth, box_scroll_w: box.scrollWidth,
            box_right: Math.ceil(r.right), scrolled: scrolled};
  });
  window.scrollTo(100000, 0); const page_scroll_x = window.scrollX; window.scrollTo(0, 0);
  return {page_w: document.documentElement.scrollWidth, body_w: document.body.scrollWidth, inner_w: window.innerWidth,
          page_scroll_x: page_scroll_x, tables: tables};
})()"""


def probe_tables(html: Path, width: int = WIDE, shot: Path | None = None) -> dict:
    "Open `html` in headless Chromium `width` px wide; measure the page and every table's box (`TABLE_PROBE`)."
    exe = require_chrome()
    with tempfile.TemporaryDirectory() as profile:
        b = Chromium(exe, profile)
        try:
            sid = b.new_page(width, 900)
            b.send("Page.navigate", {"url": html.resolve().as_uri()}, session=sid)
            b.wait_event("Page.loadEventFired", timeout=60); b.drain(0.5)
            probe = b.evaluate(TABLE_PROBE, sid)
            if shot is not None:   # the widest table in view: what a reader of a 1300 px window sees
                b.evaluate("(() => { const t = Array.from(document.querySelectorAll('table')).sort((a, b) => "
                           "b.getBoundingClientRect().width - a.getBoundingClientRect().width)[0]; "
                           "if (t) t.scrollIntoView({block: 'start'}); })()", sid)
                import base64
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(base64.b64decode(b.send("Page.captureScreenshot", {"format": "png"}, session=sid)["data"]))
        finally: b.close()
    return probe


def check_tables_fit(p: dict, width: int = WIDE):
    "The page never scrolls sideways at `width` px; every table is in a box that scrolls; some box must scroll."
    widest = sorted(p["tables"], key=lambda t: -t["table_w"])[:3]
    assert p["inner_w"] == width, p["inner_w"]
    assert p["page_w"] <= p["inner_w"] and p["body_w"] <= p["inner_w"] and p["page_scroll_x"] == 0, \
        f"the page scrolls sideways at {width} px: scrollWidth {p['page_w']} (body {p['body_w']}) > {p['inner_w']}; widest tables {widest}"
    assert p["tables"], "the report has no table"
    for t in p["tables"]:
        assert t["boxed"] and t["overflow_x"] in ("auto", "scroll"), f"a table outside a scrolling box: {t}"
        assert t["box_right"] <= p["inner_w"], f"a table's box runs off the page: {t}"
    wide = [t for t in p["tables"] if t["box_scroll_w"] > t["box_w"]]
    assert wide, f"no table is wider than its box at {width} px, so this check could not fail: {widest}"
    assert all(t["scrolled"] > 0 for t in wide), f"a wide table's box does not scroll: {wide}"
    return wide


def test_wide_tables_scroll_in_their_own_box(built):
    "Issue 23: at 1300 px the page itself never scrolls sideways; the paired comparisons (>= 20 columns) scroll in their own box."
    wide = check_tables_fit(probe_tables(built, WIDE, shot=SHOT_DIR/"wide_tables_1300.png"))
    assert max(t["cols"] for t in wide) >= 20, wide   # the paired comparisons are among them


def test_report_is_one_self_contained_file(built):
    html = built.read_text()
    assert "<script src=\"http" not in html, "remote scripts fail offline"
    assert "from baldro_nb.report import" not in html and "jp-InputPrompt" not in html.split("</style>")[-1]
    figs = built.parent/"figures"
    for f in FIGURES:
        assert (figs/f"{f}.png").stat().st_size > 0 and (figs/f"{f}.svg").stat().st_size > 0, f
    # every figure PNG is inside the HTML, byte for byte
    import base64
    for f in FIGURES: assert base64.b64encode((figs/f"{f}.png").read_bytes()).decode()[:2000] in html, f


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).iterdir()) if p.is_file()}


def test_building_twice_gives_identical_figures(study, built, tmp_path):
    csv, runs = study
    again = build_report(csv, runs, tmp_path/"again")
    a, b = _digests(built.parent/"figures"), _digests(again.parent/"figures")
    assert len(a) == 2*len(FIGURES) and a == b


def test_empty_and_partial_tables_still_build_and_name_missing_runs(study, tmp_path):
    csv, runs = study
    df = load_results(csv)
    expected = sorted(df.run_id)
    # empty table: header only
    empty = tmp_path/"empty.csv"; empty.write_text(",".join(df.columns[:23]) + "\n")
    h = build_report(empty, runs, tmp_path/"r_empty", expected=expected).read_text()
    assert f"0 of {len(expected)} expected runs finished" in h and "No comparison yet" in h
    assert all(rid in h for rid in expected[:3])
    # partial: drop three runs
    drop = expected[:3]
    part = tmp_path/"part.csv"; df[~df.run_id.isin(drop)].to_csv(part, index=False)
    h = build_report(part, runs, tmp_path/"r_part", expected=expected).read_text()
    assert f"{len(expected) - 3} of {len(expected)} expected runs finished" in h and "Missing (3)" in h
    for rid in drop: assert rid in h


def test_study_builds_the_report_through_the_module_entry_point(study, tmp_path):
    "`baldro study`'s report step: `cli.study_report` runs `python -m baldro_nb.report` in a child process."
    from baldro_nb.cli import study_report
    from baldro_nb.core import repo_root
    csv, runs = study
    out = tmp_path/"outputs"; shutil.copytree(runs, out/"runs"); shutil.copy(csv, out/"results.csv")
    ids = sorted(load_results(csv).run_id)
    (tmp_path/"expected.txt").write_text("\n".join(ids + ["never_run"]) + "\n")
    html = study_report(repo_root(), out, expected=tmp_path/"expected.txt")
    assert html == out/"report"/"index.html" and html.exists()
    h = html.read_text()
    assert f"{len(ids)} of {len(ids) + 1} expected runs finished" in h and "never_run" in h
    assert all((out/"report"/"figures"/f"{f}.png").exists() for f in FIGURES)
