#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, notebooks clean and in sync with the package, the notebooks' inline
# tests (nbdev_test) and the integration tests (pytest). Ends with one line `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh || exit 1
[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || source .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg PYTHONHASHSEED=0
# the arithmetic every run gets (core.arithmetic_env: AVX2 caps, one thread), also for what the tests build in their own
# processes (the cached tiny models): the same bits as the main job's, on any x86-64 machine
eval "$(python -c 'import shlex; from baldro_nb.core import arithmetic_env; print(" ".join(f"export {k}={shlex.quote(v)};" for k, v in arithmetic_env().items()))')"
# prerequisite (checked, never installed here): headless Chromium for the browser tests (tests/test_report.py,
# tests/test_jupyterlab.py). $CHROME points at a browser binary; else chromium, chromium-browser or google-chrome on PATH.
# When missing, those tests fail with the same message (tests/_cdp.py).
if [ -n "${CHROME:-}" ]; then chrome=$(command -v "$CHROME" 2>/dev/null)
else chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || command -v google-chrome-stable)
  for app in /Applications/Chromium.app/Contents/MacOS/Chromium "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; do
    [ -n "$chrome" ] || { [ -x "$app" ] && chrome=$app; }; done; fi
if [ -z "$chrome" ]; then
  echo "MISSING PREREQUISITE: headless Chromium (${CHROME:+CHROME=$CHROME is not executable; }looked for \$CHROME, chromium, chromium-browser, google-chrome). Fix: \`sudo apt-get install -y chromium\` (Debian/Ubuntu), \`brew install --cask chromium\` (macOS), or set CHROME=/path/to/chrome. The browser tests will fail."
else export CHROME=$chrome; echo "browser for the browser tests: CHROME=$chrome"; fi
fail=0
before=$(git status --porcelain)
nbdev_clean >/dev/null 2>&1
if [ "$before" != "$(git status --porcelain)" ]; then
  echo "FAIL: nbdev_clean changed notebooks: run nbdev_clean and commit."; git status --porcelain; fail=1; fi
before=$(git status --porcelain)
nbdev_export
if [ "$before" != "$(git status --porcelain)" ]; then
  echo "FAIL: baldro_nb/ is out of sync with nbs/: run nbdev_export and commit."; git status --porcelain; fail=1; fi
nb_total=$(find nbs -name '*.ipynb' -not -path '*/.*' -not -name '_*' | while read f; do d=$(dirname "$f"); [ -e "$d/.notest" ] || echo "$f"; done | wc -l)
start=$(date +%s)
if nbdev_test --n_workers 2 --timing 2>&1 | tee /tmp/nbdev_test.log; then nb_failed=0
else nb_failed=$(grep -cE '^\s+\S+\.ipynb$' /tmp/nbdev_test.log || true); [ "$nb_failed" -gt 0 ] || nb_failed=1; fi
echo "nbdev_test: $((nb_total - nb_failed)) notebooks passed, $nb_failed failed in $(( $(date +%s) - start )) s"
# two workers (pytest-xdist; the tests' processes run one thread each): tests/conftest.py builds the shared tiny
# models one per worker; worksteal hands a finished worker the queued tests of a busy one
python -m pytest tests -q -p no:cacheprovider -n "${BALDRO_TEST_WORKERS:-2}" --dist worksteal --durations=15 2>&1 | tee /tmp/pytest.log
last=$(grep -E '(passed|failed|error|no tests ran)' /tmp/pytest.log | tail -1)
py_passed=$(echo "$last" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
py_failed=$(echo "$last" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s+=$1} END {print s+0}')
[ -n "$last" ] || py_failed=1
passed=$((nb_total - nb_failed + py_passed)); failed=$((nb_failed + py_failed + fail))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
