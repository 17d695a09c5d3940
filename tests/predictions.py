"""Comparing served predictions with `Bundle.predict`, shared by unit and e2e tests."""

import numpy as np


def assert_same_predictions(got: dict, want: dict) -> None:
    """Labels equal; probabilities and vectors within atol 1e-4."""
    assert set(got) == set(want)
    for task, w in want.items():
        g = got[task]
        assert set(g) == set(w), task
        for key, value in w.items():
            if key in ("label", "labels"):
                assert g[key] == value, task
            elif key == "entities":
                assert [(e["type"], e["start"], e["end"], e["text"]) for e in g[key]] == \
                       [(e["type"], e["start"], e["end"], e["text"]) for e in value]
                np.testing.assert_allclose([e["score"] for e in g[key]], [e["score"] for e in value], atol=1e-4)
            elif key == "scores":
                assert list(g[key]) == list(value)
                np.testing.assert_allclose(list(g[key].values()), list(value.values()), atol=1e-4)
            else:
                np.testing.assert_allclose(g[key], value, atol=1e-4)
