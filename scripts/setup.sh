#!/usr/bin/env bash
# Install mfzoo (editable) and its test dependencies into the current Python environment.
#   bash scripts/setup.sh            core + [dev]
#   bash scripts/setup.sh bench ann  also the [bench] / [ann] extras
# torch is installed only when none is present (pinned to the CPU build that pip finds for
# this platform), so an existing CUDA build of torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
TORCH_SPEC=${MFZOO_TORCH_SPEC:-torch==2.13.0}

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "no torch found: installing $TORCH_SPEC"
    "$PYTHON" -m pip install --quiet "$TORCH_SPEC"
fi
extras="dev"
for extra in "$@"; do extras="$extras,$extra"; done
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
"$PYTHON" -c "import mfzoo, torch; print(f'mfzoo {mfzoo.__version__} with torch {torch.__version__} ready')"
