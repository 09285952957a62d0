#!/usr/bin/env bash
# The GPU check: does the real study's code run on this machine's GPU? Run from the repository root, offline; it
# stops itself (GPU_CHECK_BUDGET_S, default 420 s after the wheel install; every step has its own cap as well).
# It checks, one step after another (a failed or timed-out step is logged and the next one runs):
#   1. the machine and the versions actually imported: nvidia-smi; the pinned transformers 4.57.6, huggingface_hub
#      0.36.2 and tokenizers 0.22.x (installed from .whl into /tmp/site) shadow the image's; every baldro_nb module
#      imports;
#   2. smoke_1b: bench/gpu_smoke.py on a random Llama-3.2-1B-sized model in bf16 (NPO + retain term, cached and live
#      reference, one evaluation batch): step time, tokens/s, peak memory;
#   3. reweighting_matrix: bench/reweighting_matrix.py, every variant (full, LoRA, LoRA on a 4-bit base) x objective x
#      reweighting cell in bf16: finite losses and gradients, weights on the device, step time, peak memory;
#   4. tiny_e2e: bench/gpu_tiny_e2e.py, the tiny study's evaluation on the GPU against the CPU, and the unlearn notebook
#      itself executed by papermill on the GPU (NPO, BalDRO-DV+NPO; against the study's stored CPU runs where
#      reference.json holds them), from .gpudata
#      (the finetuned tiny-llama target, its retain log, TOFU-mini, reference.json);
#   5. smoke_8b: bench/gpu_smoke.py on a random Llama-3.1-8B-sized model (batch 2, gradient checkpointing): does it fit.
#   (2c. smoke_smollm2: bench/gpu_smoke.py on SmolLM2-135M's shape with random weights, batch 4: the SmolLM2 cell; the
#   real weights do not fit what the check can carry.)
# Needs the ignored folders .whl (wheels) and .gpudata that bench/prepare_gpu_check.sh builds.
# Writes under $OUT (default /tmp/gpu_check_out): gpu_check.log (every step's command, output, rc and seconds, then a
# "steps (rc): NAME=rc ..." line and "GPU CHECK DONE"), smoke_1b.json, smoke_smollm2.json, reweighting_matrix.json, gpu_e2e.json,
# smoke_8b.json. Without CUDA (a local simulation) it runs the CPU configurations instead (the tiny smoke into
# smoke_1b.json, the e2e on CPU for BalDRO-DV+NPO) and skips the matrix and the 8B smoke. Exit status 1 only when the
# wheels do not install; otherwise 0 (the log's "steps (rc)" line says which steps failed).
# Dry mode (`GPU_CHECK_DRY=1 bash bench/gpu_check.sh` or `bash bench/gpu_check.sh --dry`; tests/test_gpu_check_dry.py):
# no wheel install, no nvidia-smi, no .gpudata; the versions step, the whole method matrix (every variant x objective x
# cell, bf16 on CPU, tiny model, 1 step) and the tiny smoke on CPU, with the same step/log/status code, $OUT default
# /tmp/gpu_check_dry; exit 1 if a step failed. Set PYTHON to choose the interpreter (default python3).
DRY=${GPU_CHECK_DRY:-0}; [ "${1:-}" = "--dry" ] && DRY=1
PY=${PYTHON:-python3}
if [ "$DRY" = "1" ]; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi

set +e
set -o pipefail
[ "$DRY" = "1" ] && OUT=${OUT:-/tmp/gpu_check_dry}
OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"; LOG=$OUT/gpu_check.log; : > "$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HOME=/tmp/hf_home HF_DATASETS_CACHE=/tmp/hf_home/datasets
BUDGET=${GPU_CHECK_BUDGET_S:-420}   # seconds for everything after the install; each step gets min(its cap, what is left)
T0=$SECONDS; STATUS=""

step() {  # step NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - (SECONDS - T0) - 5)); local lim=$(( cap < left ? cap : left ))
  if [ "$lim" -lt 15 ]; then echo "### SKIP $name: time budget spent" | tee -a "$LOG"; STATUS="$STATUS $name=skipped"; return; fi
  echo "### [$((SECONDS - T0))s] $name (timeout ${lim}s): $*" | tee -a "$LOG"
  local s=$SECONDS
  timeout -k 10 "$lim" "$@" 2>&1 | tee -a "$LOG"; local rc=$?
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "### $name TIMED OUT" | tee -a "$LOG"
  echo "### [$((SECONDS - T0))s] $name: rc=$rc in $((SECONDS - s))s" | tee -a "$LOG"
  STATUS="$STATUS $name=$rc"
}

echo "### gpu_check start $(date -u +%FT%TZ) in $PWD; dry=$DRY; PYTHONPATH=$PYTHONPATH; wheels: $(ls .whl 2>/dev/null | tr '\n' ' ')" | tee -a "$LOG"

# 1. the machine and the versions actually imported (ours from /tmp/site must shadow the image's)
if [ "$DRY" = "1" ]; then echo "### SKIP nvidia-smi: dry mode" | tee -a "$LOG"; else
step nvidia-smi 30 nvidia-smi
step nvidia-smi-query 30 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
fi
step versions 90 $PY - <<'EOF'
import sys, importlib, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda build", torch.version.cuda, "cuda available", torch.cuda.is_available(),
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      "capability", torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None)
bad = []
for m in ("transformers", "tokenizers", "huggingface_hub", "datasets", "accelerate", "peft", "safetensors", "numpy",
          "pandas", "pyarrow", "fsspec", "dill", "multiprocess", "nltk", "rouge_score", "defusedxml", "scipy", "yaml"):
    try:
        mod = importlib.import_module(m); print(f"{m:16s} {getattr(mod, '__version__', '?'):14s} {mod.__file__}")
    except Exception as e:
        bad.append(m); print(f"{m:16s} IMPORT FAILED: {type(e).__name__}: {e}")
for m in ("rouge_score.rouge_scorer", "nltk.stem.porter", "baldro_nb.data", "baldro_nb.models", "baldro_nb.training",
          "baldro_nb.evaluation", "baldro_nb.cli", "transformers.trainer"):
    try: importlib.import_module(m); print("import ok:", m)
    except Exception as e: bad.append(m); print(f"import FAILED: {m}: {type(e).__name__}: {e}")
import transformers, huggingface_hub, tokenizers
ok = (transformers.__version__ == "4.57.6" and huggingface_hub.__version__ == "0.36.2" and tokenizers.__version__.startswith("0.22."))
print("pinned versions in use:", ok)
sys.exit(1 if bad or not ok else 0)
EOF

HAS_CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null)
[ "$DRY" = "1" ] && HAS_CUDA=dry
echo "### CUDA available: ${HAS_CUDA:-?}" | tee -a "$LOG"

# the method matrix: every variant (all weights; LoRA; LoRA on a 4-bit base, skipped with the reason when
# bitsandbytes or CUDA is missing) x objective x reweighting cell (mean, DV softmin/softmax/forget_set/token/scalar,
# group): finite losses and gradients, weights on the device, step time and peak memory per cell, one JSON record each
MATRIX="bench/reweighting_matrix.py --variants full,lora,lora_4bit --out $OUT/reweighting_matrix.json"

if [ "$DRY" = "1" ]; then
  echo "### dry mode: CPU, tiny configurations; SKIP tiny_e2e (needs .gpudata), smoke_8b (needs a GPU)" | tee -a "$LOG"
  step reweighting_matrix 150 $PY $MATRIX --device cpu --dtype bfloat16 --hidden 32 --steps 1
  step smoke_tiny_cpu 120 $PY bench/gpu_smoke.py --arch tiny --device cpu --steps 1 --batch 2 --eval-batch 4 --new-tokens 4 --json "$OUT/smoke_1b.json"
else
# the outputs/ copy the tiny e2e reads (BALDRO_OUTPUTS): outside the working tree, writable
rm -rf /tmp/baldro_outputs && cp -r .gpudata/outputs /tmp/baldro_outputs
export BALDRO_OUTPUTS=/tmp/baldro_outputs

if [ "$HAS_CUDA" = "1" ]; then
  # 2. Llama-3.2-1B-sized random model, bf16 sdpa
  step smoke_1b 150 $PY bench/gpu_smoke.py --json "$OUT/smoke_1b.json"
  # 2c. SmolLM2-135M's shape (30 layers, tied embeddings; random weights: its 98 MB GGUF exceeds the 64 MiB carry) at
  #     params/study_smol.yaml's batch: the step and evaluation times that project the SmolLM2 study onto one GPU
  step smoke_smollm2 60 $PY bench/gpu_smoke.py --arch smollm2-135m --batch 4 --json "$OUT/smoke_smollm2.json"
  # 2a. the method matrix on CUDA in bf16
  step reweighting_matrix 90 $PY $MATRIX --device cuda --dtype bfloat16
  # 3. the tiny study end to end (CPU vs CUDA evaluation; the unlearn notebook on CUDA) -- before the 8B smoke, the step most
  #    likely to run out of memory or time on an H100
  step tiny_e2e 240 $PY bench/gpu_tiny_e2e.py --device cuda --outputs /tmp/baldro_outputs \
       --reference .gpudata/reference.json --json "$OUT/gpu_e2e.json"
  # 2b. 8B-sized random model (bf16 weights + grads + AdamW states + a live reference copy: ~75 GiB before activations)
  step smoke_8b 200 env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True $PY bench/gpu_smoke.py --arch llama-3.1-8b --batch 2 --grad-ckpt --steps 3 --json "$OUT/smoke_8b.json"
else
  echo "### no CUDA: CPU simulation (tiny smoke, e2e on CPU, no 8B)" | tee -a "$LOG"
  step smoke_tiny_cpu 120 $PY bench/gpu_smoke.py --arch tiny --device cpu --steps 2 --json "$OUT/smoke_1b.json"
  step tiny_e2e 420 $PY bench/gpu_tiny_e2e.py --device cpu --outputs /tmp/baldro_outputs --methods BalDRO-DV+NPO \
       --reference .gpudata/reference.json --json "$OUT/gpu_e2e.json"
fi
fi

echo "### steps (rc):$STATUS; total $((SECONDS - T0))s after the install; files in \$OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
echo "GPU CHECK DONE" | tee -a "$LOG"
# the dry run is a test: any failed step fails it (a real GPU run reads the log instead)
if [ "$DRY" = "1" ]; then case " $STATUS " in *=[1-9]*) exit 1;; esac; fi
