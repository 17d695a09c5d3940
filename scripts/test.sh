#!/usr/bin/env bash
# The whole test suite: unit (no Ray), e2e (HTTP with real clients on a local Ray), integration
# (local Ray clusters). With arguments, runs just `pytest ARGS`.
#
# The tiny test bundle is trained once and shared. Each integration module runs in its own pytest
# process: they start differently shaped Ray clusters (multi-node, Ray Train, Serve autoscaling),
# and a fresh process per cluster keeps one module's Ray/Serve state from leaking into the next.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
if [ $# -gt 0 ]; then exec $PY -m pytest -q -ra "$@"; fi

export MTC_TINY_BUNDLE=${MTC_TINY_BUNDLE:-$PWD/build/test-cache/tiny_bundle}
rm -rf "$MTC_TINY_BUNDLE"
echo "==> training the tiny test bundle into $MTC_TINY_BUNDLE"
$PY -c "import sys; sys.path.insert(0, 'tests'); from conftest import tiny_config; from mtl.train import train; train(tiny_config(), '$MTC_TINY_BUNDLE', progress=False)" || exit 1

status=0
run() { echo "==> pytest $*"; $PY -m pytest -q -ra --durations=8 "$@" || status=1; }
run tests/unit tests/e2e
for module in tests/integration/test_*.py; do run "$module"; done
[ $status -eq 0 ] && echo "==> all test groups passed" || echo "==> SOME TEST GROUPS FAILED"
exit $status
