#!/usr/bin/env bash
# The main job: install, then run the whole embedded study offline (TOFU-mini -> tiny models -> grid -> report).
set -euo pipefail
cd "$(dirname "$0")/.."
BALDRO_EXTRAS="${BALDRO_EXTRAS-}" bash tools/install.sh   # the package and its runtime requirements only (no dev tools)
[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || source .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec baldro study "$@"
