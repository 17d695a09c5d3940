"""`served`: the real Serve application (Gateway -> Scheduler -> EncoderReplica) on a local Ray,
deployed once per session with the `tiny_bundle` and a small config, on a free HTTP port.

Yields a `Served` (use `.url`, or `str(served)`); e2e modules call it with real HTTP clients.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.net import free_port

APP_NAME = "mtc-e2e"

# Small and fixed: one encoder replica (so its counters are the whole pool's), one gateway.
E2E_CONFIG = {
    "app_name": APP_NAME,
    "encoder": {
        "num_cpus": 1,
        "max_ongoing_requests": 2,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    },
    "scheduler": {"num_cpus": 0.25},
    "gateway": {
        "num_cpus": 0.25,
        "autoscaling": {"policy": "ongoing_requests", "min_replicas": 1, "max_replicas": 1},
        "settings": {"max_text_chars": 5000, "max_texts_per_request": 16, "max_body_bytes": 200_000},
    },
}


@dataclass(frozen=True)
class Served:
    url: str
    bundle_path: str
    app_name: str

    def __str__(self) -> str:
        return self.url

    def encoder_counters(self) -> dict:
        """The (single) encoder replica's own counters: batches, items, encoder_passes, node."""
        from ray import serve

        from cluster.serve_config import ENCODER_DEPLOYMENT

        handle = serve.get_deployment_handle(ENCODER_DEPLOYMENT, app_name=self.app_name)
        return handle.counters.remote().result(timeout_s=30)


def _wait_ready(url: str, timeout_s: float = 120, verify=True) -> None:
    """Poll GET /healthz until 200 (`verify`: httpx's, e.g. an SSLContext trusting a test certificate)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/healthz", timeout=5, verify=verify)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as err:
            last = repr(err)
        time.sleep(0.5)
    raise RuntimeError(f"served app not ready after {timeout_s:.0f} s: {last}")


# Whether `served` started (and so owns) the Ray of this process; see `_release_served`.
_OWNED = {"ray": False}


def _release_served() -> None:
    """Tear the session's Ray + Serve down (idempotent). Runs when the last e2e test is done (hook
    below), so later test directories (integration/) can start their own Ray in this process."""
    if not _OWNED["ray"]:
        return
    _OWNED["ray"] = False
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def pytest_runtest_teardown(item, nextitem):
    # Only called for items under tests/e2e/: release Ray once the next test lives elsewhere.
    if nextitem is None or Path(str(nextitem.path)).parent != Path(str(item.path)).parent:
        _release_served()


@pytest.fixture(scope="session")
def served(tiny_bundle):
    import ray
    from ray import serve

    from cluster.app import build_application
    from cluster.serve_config import parse_serve_config

    port = free_port()
    bundle_path = str(getattr(tiny_bundle, "path", None) or tiny_bundle)
    config = parse_serve_config({**E2E_CONFIG, "bundle": bundle_path, "http": {"port": port}})
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        _OWNED["ray"] = True
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(config), name=APP_NAME, route_prefix="/")
        if not _OWNED["ray"]:
            # Serve may already run in another module's Ray (its HTTP port, not ours, applies).
            port = serve.context._get_global_client().http_config.port  # noqa: SLF001
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        yield Served(url=url, bundle_path=bundle_path, app_name=APP_NAME)
    finally:
        if _OWNED["ray"]:
            _release_served()
        elif ray.is_initialized():
            serve.delete(APP_NAME)
