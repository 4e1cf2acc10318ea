#!/usr/bin/env bash
# Install, build the demo workspace on real Fashion-MNIST images, start its pipeline, open the app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
WS="${CURATION_WORKSPACE:-demo-workspace}"
.venv/bin/python -m curation demo "$WS"
.venv/bin/python -m curation submit "$WS" pipeline --if-needed
exec .venv/bin/streamlit run app.py --server.address 127.0.0.1 --server.port "${PORT:-8501}" -- --workspace "$WS"
