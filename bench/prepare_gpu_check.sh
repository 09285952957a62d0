#!/usr/bin/env bash
# Builds the two ignored folders that bench/gpu_check.sh needs on an offline GPU machine (Python 3.12, its own torch):
#   .whl/      py3.12 wheels of our pinned transformers / tokenizers / huggingface_hub, papermill + ipykernel, and what the
#              image lacks
#   .gpudata/  outputs/ copy (TOFU-mini 40 authors, the finetuned tiny-llama target, its retain log) + reference.json
#              (the study's stored CPU results for NPO and BalDRO-DV+NPO, seed 0, and the target's epoch-0 evaluation)
# Run from the repository root after `baldro study` (tools/main.sh) has filled outputs/; then run on the GPU machine
#   bash bench/gpu_check.sh   with .whl and .gpudata carried along.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpudata/' .git/info/exclude || echo '/.gpudata/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir .whl
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
for p in transformers tokenizers huggingface_hub datasets dill multiprocess nltk defusedxml fsspec peft; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl "$p==$(ver $p)"
done
# bitsandbytes (not installed here: CPU machine) for the matrix's 4-bit + LoRA cells; without it they are skipped
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl \
  "bitsandbytes${BNB_VERSION:+==$BNB_VERSION}" || echo "warning: no bitsandbytes wheel: the matrix's lora_4bit cells will be skipped"
# papermill and a Jupyter kernel (the tiny e2e executes nbs/experiments/unlearn.ipynb as `baldro run` does) with their
# dependency closure for Python 3.12, at this venv's versions where it has them (measured 2026-12-07: 48 wheels, 19 MB)
"$PY" -m pip freeze --exclude-editable | grep -v "^torch==" > .whl/constraints.txt
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl -c .whl/constraints.txt \
  "papermill==$(ver papermill)" "ipykernel==$(ver ipykernel)" 2> >(grep -v "^WARNING: Location" >&2)
rm .whl/constraints.txt
# rouge-score is published as a source archive only: build its (pure-Python) wheel here
"$PY" -m pip wheel -q --no-deps -w .whl "rouge-score==$(ver rouge-score)"
rm -rf .gpudata && mkdir -p .gpudata/outputs/models/tiny-llama .gpudata/outputs/retain_logs .gpudata/outputs/data
cp -rL outputs/models/tiny-llama/full .gpudata/outputs/models/tiny-llama/full
cp -r outputs/retain_logs/tiny-llama_retain99 .gpudata/outputs/retain_logs/
cp -r "$(BALDRO_OUTPUTS=$PWD/outputs "$PY" -c "from baldro_nb.data import tofu_mini_dir; print(tofu_mini_dir(0, 40))")" .gpudata/outputs/data/   # the current TOFU_MINI_VERSION
"$PY" - <<'PYEOF'
import glob, json, pathlib
runs = {}
for method in ("NPO", "BalDRO-DV+NPO"):   # single unlearn runs (e.g. from a per-run grid); the miniature study has none
    hits = sorted(glob.glob(f"outputs/runs/unlearn__tiny-llama__{method}__0__*"))
    if not hits: continue
    d = pathlib.Path(hits[0])
    runs[method] = {"run": d.name, "params": (d/"params.yaml").read_text(), "metrics": json.loads((d/"metrics.json").read_text()),
                    "epochs": {p.name.split("_")[1]: json.loads((p/"TOFU_SUMMARY.json").read_text()) for p in sorted((d/"evals").glob("epoch_*"))},
                    "steps": [json.loads(l) for l in (d/"steps.jsonl").read_text().splitlines() if l.strip()]}
ref = {"note": "from this repo's outputs/runs (CPU fp32 eager); informational", "runs": runs}
if "NPO" in runs: ref["target_eval_epoch0"] = runs["NPO"]["epochs"]["0"]
pathlib.Path(".gpudata/reference.json").write_text(json.dumps(ref))
PYEOF
du -sh .whl .gpudata
