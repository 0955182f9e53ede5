#!/usr/bin/env bash
# Mutation testing of the core modules (cosmic-ray); not part of CI. See benchmarks/mutation.py
# and docs/testing.md. Usage: bash benchmarks/mutation.sh [--rev HEAD] [--workers 2] [--label X]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash .ci/install
.venv/bin/python -c "import cosmic_ray, pytest_cov" 2>/dev/null \
  || .venv/bin/pip install -q --disable-pip-version-check -e ".[mutation]"
PATH="$PWD/.venv/bin:$PATH" exec .venv/bin/python benchmarks/mutation.py "$@"
