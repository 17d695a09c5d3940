"""Loss weightings on fixed losses: values, gradients, adaptation direction, state, errors."""
import math

import pytest
import torch

from mtl.weighting import WEIGHTINGS, DWAWeighting, FAMOWeighting, UncertaintyWeighting, make_weighting

TASKS = ["a", "b"]


def test_registry_names_every_strategy():
    assert set(WEIGHTINGS) == {"equal", "uncertainty", "dwa", "famo"}


def test_equal_is_identity_and_keeps_the_graph():
    w = make_weighting("equal", TASKS)
    x = torch.tensor(2.0, requires_grad=True)
    loss = x * 3.5
    out = w.combine("a", loss, step=0)
    assert out is loss
    w.observe("a", 7.0, 0)
    assert w.weights() == {"a": 1.0, "b": 1.0}
    assert list(w.parameters()) == []


def test_uncertainty_value_and_gradient_flow_to_log_variance():
    w = make_weighting("uncertainty", TASKS, task_types={"a": "classification", "b": "regression"})
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([0.5, -0.3]))
    loss = torch.tensor(2.0, requires_grad=True)
    out = w.combine("a", loss, step=0)
    assert out.item() == pytest.approx(math.exp(-0.5) * 2.0 + 0.5 * 0.5)  # classification: s/2
    out.backward()
    # d/ds (e^-s L + s/2) = -e^-s L + 1/2 ; the other task's s gets nothing this step
    assert w.pending_grad() == pytest.approx(-math.exp(-0.5) * 2.0 + 0.5)
    assert loss.grad.item() == pytest.approx(math.exp(-0.5))  # the weight reaches the model
    w.observe("a", 2.0, 0)  # gradient < 0 -> s_a grows, s_b untouched
    assert w.log_var[0].item() > 0.5 and w.log_var[1].item() == pytest.approx(-0.3)
    assert w.pending_grad() is None
    out_b = w.combine("b", torch.tensor(2.0), step=1)
    assert out_b.item() == pytest.approx(math.exp(0.3) * 2.0 - 0.3)  # regression: s


def test_uncertainty_starts_at_one_and_learns_kendalls_optimum():
    w = make_weighting("uncertainty", TASKS, task_types={"b": "regression"}, lr=0.05)
    assert w.weights() == {"a": 1.0, "b": 1.0}
    for step in range(1500):
        task = TASKS[step % 2]
        out = w.combine(task, torch.tensor(2.0), step)
        out.backward()
        w.observe(task, 2.0, step)
    # optimum: e^-s = 1/(2L) for classification, 1/L for regression
    assert w.weights()["a"] == pytest.approx(0.25, rel=0.05)
    assert w.weights()["b"] == pytest.approx(0.5, rel=0.05)


def test_dwa_weights_after_synthetic_history():
    w = make_weighting("dwa", TASKS, window=2, temperature=2.0)
    assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0})
    history = [("a", 4.0), ("b", 1.0), ("a", 4.0), ("b", 1.0),   # first windows: a=4, b=1
               ("a", 2.0), ("b", 1.0), ("a", 2.0), ("b", 1.0)]   # second: a=2 (r=0.5), b=1 (r=1)
    for step, (task, loss) in enumerate(history):
        w.observe(task, loss, step)
    ra, rb = 0.5, 1.0
    expected_a = 2 * math.exp(ra / 2) / (math.exp(ra / 2) + math.exp(rb / 2))
    got = w.weights()
    assert got["a"] == pytest.approx(expected_a)
    assert got["a"] + got["b"] == pytest.approx(2.0)  # mean weight 1
    assert got["b"] > got["a"]  # the task that stopped improving gets more weight
    out = w.combine("a", torch.tensor(3.0), step=8)
    assert out.item() == pytest.approx(3.0 * expected_a)


def test_dwa_ratio_is_one_until_two_full_windows():
    w = make_weighting("dwa", TASKS, window=3)
    for step in range(5):
        w.observe("a", 10.0 / (step + 1), step)
    assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0})


def _famo_run(w, steps):
    # a keeps improving (geometric decay); b is stuck at 1.0
    for step in range(steps):
        task = TASKS[step % 2]
        value = 1.0 * 0.97 ** (step // 2) if task == "a" else 1.0
        loss = torch.tensor(value, requires_grad=True)
        w.combine(task, loss, step).backward()
        w.observe(task, value, step)


def test_famo_raises_the_weight_of_a_task_that_stops_improving():
    w = make_weighting("famo", TASKS)
    assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0})
    _famo_run(w, 200)
    got = w.weights()
    assert got["b"] > 1.2 and got["a"] < 0.8
    assert got["a"] + got["b"] == pytest.approx(2.0)
    assert sum(w.gradient_scales().values()) == pytest.approx(2.0)


def test_famo_term_is_scaled_log_loss():
    w = make_weighting("famo", TASKS)
    loss = torch.tensor(0.5, requires_grad=True)
    out = w.combine("a", loss, step=0)
    # no levels yet, equal z: coefficient K*z/c = 2*0.5/(0.5/0.5 + 0.5/0.5) * 0.5 = 0.5
    assert out.item() == pytest.approx(0.5 * math.log(0.5), rel=1e-6)
    out.backward()
    assert loss.grad.item() == pytest.approx(1.0, rel=1e-6)  # at its own level the gradient scale is 1


@pytest.mark.parametrize("name", ["uncertainty", "dwa", "famo"])
def test_state_dict_round_trip_resumes_identically(name):
    def steps(w, rng):
        for step in rng:
            task = TASKS[step % 2]
            value = 1.0 + 0.5 * math.sin(step) + (0.99 ** step)
            out = w.combine(task, torch.tensor(value, requires_grad=True), step)
            out.backward()
            w.observe(task, value, step)

    opts = {"dwa": {"window": 3}}.get(name, {})
    ref = make_weighting(name, TASKS, **opts)
    steps(ref, range(60))
    part = make_weighting(name, TASKS, **opts)
    steps(part, range(30))
    resumed = make_weighting(name, TASKS, **opts)
    resumed.load_state_dict(part.state_dict())
    steps(resumed, range(30, 60))
    assert resumed.weights() == pytest.approx(ref.weights(), rel=1e-9)


def test_errors_name_the_known_options():
    with pytest.raises(ValueError) as err:
        make_weighting("gradnorm", TASKS)
    assert "gradnorm" in str(err.value)
    for known in WEIGHTINGS:
        assert known in str(err.value)
    for name in WEIGHTINGS:
        with pytest.raises(KeyError, match="'a', 'b'"):
            make_weighting(name, TASKS).combine("zzz", torch.tensor(1.0), 0)
    with pytest.raises(ValueError, match="at least one"):
        make_weighting("equal", [])
    with pytest.raises(KeyError, match="unknown tasks"):
        make_weighting("uncertainty", TASKS, task_types={"q": "regression"})


def test_no_weighting_exposes_optimizer_parameters():
    # weightings step their own state in observe(); a trainer optimizer must not step it again
    assert [n for n in WEIGHTINGS if list(make_weighting(n, TASKS).parameters())] == []
    assert isinstance(make_weighting("famo", TASKS), FAMOWeighting)
    assert isinstance(make_weighting("dwa", TASKS), DWAWeighting)
    assert isinstance(make_weighting("uncertainty", TASKS), UncertaintyWeighting)
