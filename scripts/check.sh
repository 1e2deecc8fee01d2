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
"$PYTHON" -m mkdocs build --strict --quiet --site-dir "$site"
echo "static checks passed"
