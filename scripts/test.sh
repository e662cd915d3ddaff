#!/usr/bin/env bash
# Install basam-hf into a fresh virtual environment of its own, check the code style (ruff) and run the test suite.
# Usage: bash scripts/test.sh [pytest arguments]
#
# The environment is BASAM_TEST_VENV (default .venv-basam-test in the checkout, ignored by git): the script makes it,
# marks it as its own, and rebuilds only a folder carrying that mark, so a user's .venv (or any other folder) is never
# removed. System packages (Debian's Chromium for the demo's browser test) are installed only in CI (CI=true) or with
# BASAM_TEST_INSTALL_BROWSER=1; otherwise that test skips and says how to opt in. BASAM_TEST_DRY_RUN=1 prints what the
# script would do (venv=..., install_browser=...) and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BASAM_TEST_VENV:-.venv-basam-test}"
MARKER="$VENV/.made-by-basam-test-sh"
if [ -e "$VENV" ] && [ ! -e "$MARKER" ]; then
    echo "scripts/test.sh: $VENV exists and was not made by this script, so it is left alone; set BASAM_TEST_VENV" \
        "to a new folder (default: .venv-basam-test)." >&2
    exit 2
fi
INSTALL_BROWSER=no
if [ "${CI:-}" = "true" ] || [ "${BASAM_TEST_INSTALL_BROWSER:-}" = "1" ]; then
    INSTALL_BROWSER=yes
fi
if [ "${BASAM_TEST_DRY_RUN:-}" = "1" ]; then
    echo "venv=$VENV"
    echo "install_browser=$INSTALL_BROWSER"
    exit 0
fi
rm -rf "$VENV"  # only ever a folder this script made (checked above)
python3 -m venv "$VENV"
touch "$MARKER"
. "$VENV/bin/activate"
# torch first, pinned: this project's machines serve a local CPU wheel of it; elsewhere pip installs the build its index
# serves (from PyPI on Linux: the CUDA build). README.md, "Which torch", says how to choose.
pip install -q torch==2.13.0
pip install -q -e ".[dev]"
# Debian's Chromium + chromedriver for the demo's browser test (tests/test_app.py), when missing; a failure here is
# reported by that test (skipped outside CI, failed in CI).
if [ "$INSTALL_BROWSER" = "yes" ]; then
    bash scripts/install_browser.sh || echo "scripts/install_browser.sh failed: the demo browser test will skip (fail in CI)."
fi
# transformers' generic model tests (not in its wheel) for tests/test_modeling_common_basam.py
python scripts/fetch_transformers_tests.py
set +e
# Lint first (a few seconds); the tests run whatever it finds, and the script fails if either fails.
LINT_PATHS=(src tests benchmarks scripts examples)
ruff check "${LINT_PATHS[@]}" && ruff format --check "${LINT_PATHS[@]}"
lint_rc=$?
python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it ran no test: a failure only if the suite has no tests at all (not when tests were deselected).
if [ "$rc" -eq 5 ] && compgen -G "tests/test_*.py" >/dev/null; then
    echo "pytest ran no test (all deselected); the suite has tests, so this is not a failure."
    rc=0
fi
if [ "$lint_rc" -ne 0 ]; then
    echo "scripts/test.sh: ruff found style problems (above): fix them with 'ruff check --fix' and 'ruff format'." >&2
    [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
