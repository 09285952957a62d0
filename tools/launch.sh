#!/usr/bin/env bash
# Run one experiment notebook on several GPUs: papermill injects the parameters (as for any run), nbconvert turns the
# parameterised notebook into a script, and `accelerate launch` starts one process per GPU (DDP or DeepSpeed ZeRO-3).
# The HF Trainer inside `unlearn`/`finetune` picks up the distributed setup; only rank 0 evaluates and writes.
#
#   bash tools/launch.sh CONFIG NOTEBOOK PARAMS.yaml OUT_DIR [accelerate launch options]
#   bash tools/launch.sh configs/accelerate/ddp.yaml nbs/experiments/unlearn.ipynb run.yaml outputs/runs/my_run --num_processes 4
#   bash tools/launch.sh configs/accelerate/zero3.yaml nbs/experiments/unlearn.ipynb run.yaml outputs/runs/my_8b_run
#   bash tools/launch.sh configs/accelerate/cpu_ddp.yaml nbs/experiments/unlearn.ipynb run.yaml /tmp/run   # 2 CPU processes (gloo)
#   (one CPU process with the same config: add `--cpu --num_processes 1`)
#
# PARAMS.yaml holds the run's parameters (a run folder's params.yaml works). Paths are relative to the repository root.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,12p "$0"; exit 2; }
cfg=$1; nb=$2; params=$3; out=$4; shift 4
cd "$(dirname "$0")/.."
for f in "$cfg" "$nb" "$params"; do [ -e "$f" ] || { echo "error: $f does not exist (paths are relative to the repository root)"; exit 2; }; done
mkdir -p "$out"
rel() { python -c "import os,sys; print(os.path.relpath(sys.argv[1], 'nbs'))" "$1"; }   # a path as seen from nbs/ (absolute ones too)
rel_out=$(rel "$out"); rel_cfg=$(rel "$cfg")
# A config with `use_cpu: true` (cpu_ddp.yaml) starts its processes with accelerate's multi-process launcher, which
# does not pass `use_cpu` on: ACCELERATE_USE_CPU makes the Trainer in each process a CPU rank (MULTI_CPU, gloo).
envp=""
if grep -qE '^use_cpu: *true' "$cfg"; then export ACCELERATE_USE_CPU=true; envp="ACCELERATE_USE_CPU=true "; fi
papermill --prepare-only "$nb" "$out/run.ipynb" -f "$params" -p out_dir "$rel_out" --cwd nbs -k python3 --no-progress-bar
jupyter nbconvert --to python "$out/run.ipynb" --output run --log-level WARN
echo "papermill --prepare-only $nb $out/run.ipynb -f $params -p out_dir $rel_out --cwd nbs -k python3 && jupyter nbconvert --to python $out/run.ipynb --output run && (cd nbs && ${envp}accelerate launch --config_file $rel_cfg $* $rel_out/run.py)" > "$out/command.txt"
cd nbs && exec accelerate launch --config_file "$rel_cfg" "$@" "$rel_out/run.py"
