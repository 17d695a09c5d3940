"""API keys on the running application (issue 10, finding 1): the keys of the process that builds
the app protect it, though the replicas never see that process's environment (as on a cluster,
where they inherit the raylet's), and Serve's status shows no key."""
from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import E2E_CONFIG, _wait_ready

KEYED_APP = "mtc-e2e-keyed"
KEYS = "e2e-op-key-5f1c,e2e-bulk-key-9a2d:batch"


@pytest.fixture(scope="module")
def keyed(served):
    import ray
    from ray import serve

    from cluster.app import build_application
    from cluster.serve_config import parse_serve_config

    assert ray.is_initialized()
    mp = pytest.MonkeyPatch()
    # Set only now, after Ray started: the replicas inherit the raylet's environment, which has no key.
    mp.setenv("MTC_API_KEYS", KEYS)
    config = parse_serve_config({**E2E_CONFIG, "app_name": KEYED_APP, "bundle": served.bundle_path})
    app = build_application(config)
    mp.undo()
    serve.run(app, name=KEYED_APP, route_prefix="/keyed")
    url = served.url + "/keyed"
    _wait_ready(url)
    yield url
    # The session's Ray may already be released (conftest: after the last test of this directory);
    # serve.delete would then start a new Ray just to find nothing.
    if ray.is_initialized():
        serve.delete(KEYED_APP)


def _predict(url: str, key: str | None, priority: str = "batch") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v1/predict", json={"texts": "Shares rose.", "tasks": ["topic"], "priority": priority},
                      headers=headers, timeout=60)


def test_the_operators_keys_guard_the_app_and_bind_classes(keyed):
    assert _predict(keyed, None).status_code == 401
    assert _predict(keyed, "not-a-key").status_code == 401
    assert _predict(keyed, "e2e-op-key-5f1c", "interactive").status_code == 200
    assert _predict(keyed, "e2e-bulk-key-9a2d", "batch").status_code == 200
    r = _predict(keyed, "e2e-bulk-key-9a2d", "interactive")
    assert r.status_code == 403 and "may use priority 'batch'" in r.json()["error"]


def test_no_key_shows_in_serve_status(keyed):
    from ray import serve

    shown = repr(serve.status())
    assert KEYED_APP in shown
    for plain in ("e2e-op-key-5f1c", "e2e-bulk-key-9a2d"):
        assert plain not in shown
