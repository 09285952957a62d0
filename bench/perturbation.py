"""Do the study's verdicts survive a floating-point perturbation? Compare the answers of two studies, verdict by verdict.

    python bench/perturbation.py OUT_A OUT_B          # two finished studies' outputs folders (their report/answers.csv)
    python bench/perturbation.py --run [--threads 1 2] [--root DIR]
        # runs `baldro study` twice, into DIR/outputs_threads1 and DIR/outputs_threads2 (default DIR: bench/results/),
        # with 1 and then 2 threads per run: another order of floating-point sums in every matmul and reduction,
        # so other tiny models, other trajectories; then compares them.
    python bench/perturbation.py --run --perturb native [--root DIR]
        # the second study (DIR/outputs_native) lifts the AVX2 caps (`--native-arithmetic`, 1 thread per run): the
        # CPU's widest kernels (AVX-512 where it has them), i.e. the arithmetic another CPU would bring.

Prints both answer lists side by side (verdict word, pooled estimate [interval]) and the comparisons whose verdict
word differs. Exit status: 0 when every verdict word is the same, 1 when some flip, 2 when an answers.csv is missing.
"""
from __future__ import annotations
import argparse, os, subprocess, sys
from pathlib import Path

import pandas as pd

from baldro_nb.cli import default_jobs
from baldro_nb.vocab import ANSWERS_CSV, REPORT_DIR

KEY = ["kind", "model", "objective", "variant"]


def read_answers(outputs) -> pd.DataFrame:
    "The answers.csv of a finished study's outputs folder (or the file itself)."
    p = Path(outputs)
    f = p if p.is_file() else p/REPORT_DIR/ANSWERS_CSV
    if not f.exists():
        raise SystemExit(f"{f} does not exist: run the study (baldro study) into {p} first, or pass its outputs folder.")
    return pd.read_csv(f)


def compare(a: pd.DataFrame, b: pd.DataFrame, names=("A", "B")) -> pd.DataFrame:
    "One row per comparison in either table: each side's verdict and pooled estimate [interval], and whether the word flips."
    fmt = lambda r: "–" if pd.isna(r.get("estimate")) else f"{r['estimate']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
    sides = []
    for t, n in zip((a, b), names):
        t = t.assign(**{f"verdict {n}": t.verdict, f"estimate {n}": t.apply(fmt, axis=1)})
        sides.append(t[KEY + [f"verdict {n}", f"estimate {n}"]])
    m = sides[0].merge(sides[1], on=KEY, how="outer")
    m["flips"] = m[f"verdict {names[0]}"].fillna("(absent)") != m[f"verdict {names[1]}"].fillna("(absent)")
    return m


def run_study(outputs: Path, threads: int, native: bool = False) -> None:
    "`baldro study` into `outputs` with `threads` threads per run and as many runs at once as the cores hold (never more threads than cores:"
    " 2 runs x 2 threads on 2 cores made a finetune 4 x slower); `native`: without the AVX2 caps."
    env = {**os.environ, "BALDRO_OUTPUTS": str(outputs)}
    jobs = default_jobs(threads)
    print(f"running the study with {threads} thread(s) per run, {jobs} run(s) at once, {'native' if native else 'AVX2-capped'} "
          f"arithmetic, into {outputs} ...", flush=True)
    subprocess.run([sys.executable, "-c", "import sys; from baldro_nb.cli import main; sys.exit(main(sys.argv[1:]))",
                    "study", "--threads", str(threads), "--jobs", str(jobs), *(["--native-arithmetic"] if native else [])],
                   env=env, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outputs", nargs="*", help="two outputs folders (or answers.csv files) to compare")
    ap.add_argument("--run", action="store_true", help="run the study twice first (see --threads)")
    ap.add_argument("--threads", type=int, nargs=2, default=(1, 2), help="threads per run of the two studies (default 1 2)")
    ap.add_argument("--perturb", choices=("threads", "native"), default="threads",
                    help="the second study of --run: the second --threads value, or 1 thread without the AVX2 caps")
    ap.add_argument("--root", default=str(Path(__file__).parent/"results"), help="where --run puts the two outputs folders")
    a = ap.parse_args(argv)
    if a.run:
        if a.perturb == "native":
            outs, names = [Path(a.root)/"outputs_threads1", Path(a.root)/"outputs_native"], ("AVX2 caps", "native")
            run_study(outs[0], 1); run_study(outs[1], 1, native=True)
        else:
            outs = [Path(a.root)/f"outputs_threads{t}" for t in a.threads]
            for o, t in zip(outs, a.threads): run_study(o, t)
            names = tuple(f"{t} thread{'s' * (t > 1)}" for t in a.threads)
    else:
        if len(a.outputs) != 2: ap.error("give two outputs folders, or --run")
        outs, names = [Path(o) for o in a.outputs], ("A", "B")
        for o, n in zip(outs, names): print(f"{n}: {o}")
    try: A, B = (read_answers(o) for o in outs)
    except SystemExit as e: print(e, file=sys.stderr); return 2
    m = compare(A, B, names)
    with pd.option_context("display.width", 250, "display.max_colwidth", 40, "display.max_rows", 200):
        print(m.drop(columns=["flips"]).to_string(index=False))
    flips = m[m.flips]
    print(f"\n{len(m)} answers; {len(flips)} verdict word(s) differ" + (":" if len(flips) else "."))
    for _, r in flips.iterrows():
        print(f"  {r['model']} {r['objective']} {r['variant']}: {r[f'verdict {names[0]}']} -> {r[f'verdict {names[1]}']}")
    return 1 if len(flips) else 0


if __name__ == "__main__":
    sys.exit(main())
