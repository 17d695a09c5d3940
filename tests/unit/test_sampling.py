"""Task samplers on fixed inputs: hand-computed probabilities, frequencies, seeding, resumption."""
import math
from collections import Counter

import pytest

from mtl.config import SamplerConfig
from mtl.sampling import SAMPLERS, AnnealedSampler, make_sampler

SIZES = {"a": 100, "b": 400}


def test_registry_names_every_strategy():
    assert set(SAMPLERS) == {"proportional", "temperature", "annealed", "uniform", "round_robin"}


def test_proportional_is_share_of_examples():
    s = make_sampler(SamplerConfig(name="proportional"), SIZES, seed=0)
    assert s.probabilities(0, 10) == pytest.approx({"a": 0.2, "b": 0.8})


def test_temperature_two_is_square_root_share():
    # 100^0.5 = 10, 400^0.5 = 20 -> 1/3, 2/3
    s = make_sampler(SamplerConfig(name="temperature", temperature=2.0), SIZES, seed=0)
    assert s.probabilities(5, 10) == pytest.approx({"a": 1 / 3, "b": 2 / 3})


def test_temperature_one_equals_proportional_and_large_is_near_uniform():
    t1 = make_sampler(SamplerConfig(name="temperature", temperature=1.0), SIZES, seed=0)
    assert t1.probabilities(0, 1) == pytest.approx({"a": 0.2, "b": 0.8})
    big = make_sampler(SamplerConfig(name="temperature", temperature=1000.0), SIZES, seed=0)
    assert big.probabilities(0, 1)["a"] == pytest.approx(0.5, abs=1e-3)


def test_uniform_and_round_robin():
    u = make_sampler(SamplerConfig(name="uniform"), SIZES, seed=0)
    assert u.probabilities(0, 10) == {"a": 0.5, "b": 0.5}
    rr = make_sampler(SamplerConfig(name="round_robin"), {"x": 5, "y": 1, "z": 9}, seed=0)
    assert [rr.sample(i, 7) for i in range(7)] == ["x", "y", "z", "x", "y", "z", "x"]


def test_annealed_goes_from_proportional_to_alpha_point_two():
    s = make_sampler(SamplerConfig(name="annealed"), SIZES, seed=0)
    assert s.probabilities(0, 101) == pytest.approx({"a": 0.2, "b": 0.8})
    # last step: alpha = 0.2 -> 100^0.2 / (100^0.2 + 400^0.2) = 1 / (1 + 4^0.2)
    assert s.probabilities(100, 101)["a"] == pytest.approx(1 / (1 + 4 ** 0.2))
    # halfway: alpha = 0.6
    assert AnnealedSampler.alpha(50, 101) == pytest.approx(0.6)
    assert s.probabilities(50, 101)["a"] == pytest.approx(1 / (1 + 4 ** 0.6))
    # beyond the planned steps it stays at the final alpha; one-step runs are proportional
    assert AnnealedSampler.alpha(500, 101) == pytest.approx(0.2)
    assert AnnealedSampler.alpha(0, 1) == 1.0
    # monotone towards uniform
    shares = [s.probabilities(k, 101)["a"] for k in range(0, 101, 10)]
    assert shares == sorted(shares)


@pytest.mark.parametrize("name,expected_a", [("proportional", 0.2), ("temperature", 1 / 3), ("uniform", 0.5)])
def test_empirical_frequencies_match(name, expected_a):
    s = make_sampler(SamplerConfig(name=name), SIZES, seed=7)
    counts = Counter(s.sample(i, 10_000) for i in range(10_000))
    # binomial std at n=10k is <= 0.005; 4 sigma
    assert counts["a"] / 10_000 == pytest.approx(expected_a, abs=0.02)
    assert counts["a"] + counts["b"] == 10_000


def test_annealed_frequencies_follow_schedule():
    s = make_sampler(SamplerConfig(name="annealed"), SIZES, seed=3)
    draws = [s.sample(i, 10_000) for i in range(10_000)]
    first, last = draws[:2000], draws[-2000:]
    assert first.count("a") / 2000 < last.count("a") / 2000
    expected_first = sum(s.probabilities(i, 10_000)["a"] for i in range(2000)) / 2000
    assert first.count("a") / 2000 == pytest.approx(expected_first, abs=0.04)


def test_same_seed_same_sequence_and_different_seed_differs():
    def run(seed):
        s = make_sampler(SamplerConfig(name="temperature"), SIZES, seed=seed)
        return [s.sample(i, 200) for i in range(200)]

    assert run(11) == run(11)
    assert run(11) != run(12)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_state_round_trip_continues_the_sequence(name):
    full = make_sampler(SamplerConfig(name=name), {"a": 10, "b": 30, "c": 60}, seed=5)
    reference = [full.sample(i, 100) for i in range(100)]

    first = make_sampler(SamplerConfig(name=name), {"a": 10, "b": 30, "c": 60}, seed=5)
    head = [first.sample(i, 100) for i in range(37)]
    state = first.state_dict()
    resumed = make_sampler(SamplerConfig(name=name), {"a": 10, "b": 30, "c": 60}, seed=999)
    resumed.load_state_dict(state)
    tail = [resumed.sample(i, 100) for i in range(37, 100)]
    assert head + tail == reference
    assert resumed.draws == 100


def test_state_survives_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    s = make_sampler(SamplerConfig(name="temperature"), SIZES, seed=1)
    [s.sample(i, 50) for i in range(10)]
    torch.save({"sampler": s.state_dict()}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=False)["sampler"]
    t = make_sampler(SamplerConfig(name="temperature"), SIZES, seed=1)
    t.load_state_dict(loaded)
    assert [t.sample(i, 50) for i in range(10, 20)] == [s.sample(i, 50) for i in range(10, 20)]


def test_state_for_other_sampler_or_tasks_is_refused():
    s = make_sampler(SamplerConfig(name="uniform"), SIZES, seed=1)
    with pytest.raises(ValueError, match="proportional"):
        s.load_state_dict(make_sampler(SamplerConfig(name="proportional"), SIZES, seed=1).state_dict())
    with pytest.raises(ValueError, match="tasks"):
        s.load_state_dict(make_sampler(SamplerConfig(name="uniform"), {"a": 1}, seed=1).state_dict())


def test_registry_and_input_errors_name_the_problem():
    with pytest.raises(ValueError) as err:
        make_sampler("softmax", SIZES, seed=0)
    for known in SAMPLERS:
        assert known in str(err.value)
    assert "softmax" in str(err.value)
    with pytest.raises(ValueError, match="at least one"):
        make_sampler(SamplerConfig(), {}, seed=0)
    with pytest.raises(ValueError, match="'b': 0"):
        make_sampler(SamplerConfig(), {"a": 3, "b": 0}, seed=0)
    with pytest.raises(ValueError, match="total_steps"):
        make_sampler(SamplerConfig(), SIZES, seed=0).probabilities(0, 0)


def test_probabilities_sum_to_one_for_many_tasks():
    sizes = {f"t{i}": 1 + i * i for i in range(7)}
    for name in SAMPLERS:
        s = make_sampler(SamplerConfig(name=name), sizes, seed=0)
        for step in (0, 3, 9):
            assert math.isclose(sum(s.probabilities(step, 10).values()), 1.0)
