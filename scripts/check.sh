#!/usr/bin/env bash
# The static checks CI runs before the tests; each fails the script on the first error.
#   bash scripts/check.sh
# lint (ruff check: the rule set in pyproject.toml), format (ruff format --check), types (mypy
# over mfzoo/, settings in pyproject.toml) and the documentation site (mkdocs build --strict,
# into a temporary folder that is removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export NO_MKDOCS_2_WARNING=1  # Material's end-of-life banner: not a finding of this tree

echo "== ruff check"
"$PYTHON" -m ruff check .
echo "== ruff format --check"
"$PYTHON" -m ruff format --check .
echo "== mypy"
"$PYTHON" -m mypy
echo "== mkdocs build --strict"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
# not --quiet: it hides the warnings that --strict counts. The log is shown when the build
# fails (a strict build that passes has only INFO lines: the pages outside the navigation).
if ! "$PYTHON" -m mkdocs build --strict --site-dir "$site/html" >"$site/log" 2>&1; then
    cat "$site/log"
    exit 1
fi
echo "static checks passed"
