#!/usr/bin/env bash
# The whole test suite: unit (no Ray), integration (a local Ray), e2e (HTTP with real clients).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -ra --durations=15 "$@"
