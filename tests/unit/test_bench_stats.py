"""The benchmark's paired comparison (bench/serve_load.py): pure arithmetic, no servers."""
import pytest

from bench.serve_load import Run, paired_ratio


def test_paired_ratio_compares_medians_and_keeps_each_pair():
    # a drifting machine: the baseline's own speed moves 100 -> 140 -> 120 between windows
    out = paired_ratio([90.0, 120.0, 100.0], [100.0, 140.0, 120.0])
    assert out["ratio"] == pytest.approx(100.0 / 120.0, abs=1e-3)
    assert out["pairs"] == [0.9, pytest.approx(0.857, abs=1e-3), pytest.approx(0.833, abs=1e-3)]
    assert (out["ours_median"], out["base_median"]) == (100.0, 120.0)


@pytest.mark.parametrize("ours, base", [([], []), ([1.0], [1.0, 2.0]), ([1.0], [0.0])])
def test_paired_ratio_refuses_unpaired_or_empty_windows(ours, base):
    with pytest.raises(ValueError, match="paired"):
        paired_ratio(ours, base)


def test_pooled_run_sums_windows():
    a, b = Run("w", 5.0, 100, [0.1, 0.2], 1), Run("w", 5.0, 50, [0.3], 0)
    pooled = Run.pooled("side", [a, b])
    assert (pooled.duration_s, pooled.units, pooled.errors, pooled.rate) == (10.0, 150, 1, 15.0)
    assert pooled.latencies_s == [0.1, 0.2, 0.3]
