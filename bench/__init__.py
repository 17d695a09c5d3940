"""Benchmarks, not tests: workloads, baselines and drivers, each writing a report to bench/reports/.

- `bench.serve_bench` (`mtc bench serve`): the serving stack against a raw model loop and plain Ray
  Serve; load generation in `bench.serve_load`, the baselines in `bench.serve_baselines`.
- `bench.scheduler_bench` (`python -m bench.scheduler_bench`): scheduler overhead over a Serve handle.
- `bench.generate_bench` (`python -m bench.generate_bench`): batched against sequential generation.

The drivers read examples/ and write bench/reports/ of the checkout they are installed from
(`pip install -e .`, as scripts/install.sh does).
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS_DIR = ROOT / "bench" / "reports"
