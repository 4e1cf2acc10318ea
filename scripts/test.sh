#!/usr/bin/env bash
# Install, then run the whole test suite (unit, real-data, AppTest and the headless-Chromium end-to-end test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
