"""End-to-end over real HTTP: the native JSON API called with httpx, answers equal to the model
called in-process (labels equal, probabilities within 1e-4).

Servers: `gateway_server` runs the gateway under uvicorn on a free port over the in-process
backend (always available). `served` (tests/e2e/conftest.py, when present) is the real Ray Serve
application; tests parametrized over `any_server` run against both.
The other e2e modules import the fixtures defined here.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.net import free_port
from tests.predictions import assert_same_predictions

TEXTS = ["Shares of Apple rose 3% after the earnings call in Zurich.",
         "Manchester United won the cup final at Wembley on Saturday.",
         "The new phone from Samsung has a faster chip."]


def _bundle_path(request, tmp_path_factory) -> Path:
    """The trained `tiny_bundle` when the model code provides it, else untrained heads on the
    offline encoder (every head type), so this module runs on its own."""
    try:
        tiny = request.getfixturevalue("tiny_bundle")
        return Path(getattr(tiny, "path", None) or tiny)
    except pytest.FixtureLookupError:
        import torch
        from transformers import AutoTokenizer

        from mtl.bundle import save_bundle
        from mtl.config import default_encoder_path, parse_config
        from mtl.model import MultiTaskModel

        config = parse_config({"tasks": [
            {"name": "topic", "type": "classification", "data": {"format": "bbc"},
             "labels": ["business", "sport", "tech"]},
            {"name": "entities", "type": "token_classification", "data": {"format": "wnut16"},
             "labels": ["person", "location", "company"], "max_length": 48},
            {"name": "embedding", "type": "embedding"},
        ]})
        specs = {t.name: t for t in config.tasks}
        torch.manual_seed(1)
        model = MultiTaskModel.from_pretrained(config.encoder, specs).eval()
        tok = AutoTokenizer.from_pretrained(default_encoder_path())
        return save_bundle(tmp_path_factory.mktemp("e2e") / "bundle", model=model, tokenizer=tok,
                           config=config, specs=specs)


@pytest.fixture(scope="session")
def e2e_bundle_path(request, tmp_path_factory) -> Path:
    return _bundle_path(request, tmp_path_factory)


@pytest.fixture(scope="session")
def reference_bundle(e2e_bundle_path):
    from mtl.bundle import load_bundle

    return load_bundle(e2e_bundle_path)


class UvicornThread:
    """A real HTTP server in a thread; stopped and joined on exit."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def gateway_server(e2e_bundle_path, reference_bundle):
    from cluster.backend import InProcessBackend
    from cluster.http.app import build_gateway_app
    from cluster.http.schemas import GatewaySettings

    # The in-process backend runs the model in this server's process, so its event loop runs late
    # whenever the model holds the GIL; a real gateway replica never runs a model. Loop-lag shedding
    # is off here (a lag limit no test reaches); the other front-door lanes stay as deployed.
    app = build_gateway_app(InProcessBackend(reference_bundle),
                            GatewaySettings(bundle_path=str(e2e_bundle_path), max_text_chars=5000,
                                            max_texts_per_request=16, max_body_bytes=200_000,
                                            front_door={"max_lag_s": 60.0}))
    with UvicornThread(app) as url:
        yield url


@pytest.fixture(params=["uvicorn", pytest.param("served", marks=pytest.mark.ray)])
def any_server(request):
    if request.param == "uvicorn":
        return request.getfixturevalue("gateway_server")
    try:
        served = request.getfixturevalue("served")
    except pytest.FixtureLookupError:
        pytest.skip("no `served` fixture (tests/e2e/conftest.py) yet")
    return str(getattr(served, "url", served)).rstrip("/")



def test_predict_over_http_matches_in_process(any_server, reference_bundle):
    with httpx.Client(base_url=any_server, timeout=60) as c:
        r = c.post("/v1/predict", json={"texts": TEXTS, "priority": "interactive", "deadline_ms": 30_000})
        assert r.status_code == 200, r.text
        body = r.json()
    for got, want in zip(body["results"], reference_bundle.predict(TEXTS)):
        assert_same_predictions(got, want)
    assert body["timing"]["total_ms"] > 0


def test_task_subset_and_single_text(any_server, reference_bundle):
    names = list(reference_bundle.tasks)[:2]
    with httpx.Client(base_url=any_server, timeout=60) as c:
        r = c.post("/v1/predict", json={"texts": TEXTS[1], "tasks": names})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert_same_predictions(res, reference_bundle.predict([TEXTS[1]], names)[0])


def test_sentiment_is_answered_beside_topic_in_one_request(any_server, reference_bundle):
    """The default bundle's sentiment task (issue 13), asked for with another task in one call."""
    assert "sentiment" in reference_bundle.tasks, list(reference_bundle.tasks)
    texts = ["a gorgeous, moving film .", "tedious and badly acted ."]
    with httpx.Client(base_url=any_server, timeout=60) as c:
        r = c.post("/v1/predict", json={"texts": texts, "tasks": ["topic", "sentiment"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for got, want in zip(results, reference_bundle.predict(texts, ["topic", "sentiment"])):
        assert set(got) == {"topic", "sentiment"}
        assert got["sentiment"]["label"] in ("negative", "positive")
        assert_same_predictions(got, want)


def test_tasks_stats_health_openapi(any_server, reference_bundle):
    with httpx.Client(base_url=any_server, timeout=30) as c:
        tasks = c.get("/v1/tasks").json()["tasks"]
        assert [t["name"] for t in tasks] == list(reference_bundle.tasks)
        assert c.get("/healthz").json()["ready"] is True
        assert isinstance(c.get("/v1/stats").json(), dict)
        assert "/v1/predict" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200


def test_concurrent_requests_share_batches(gateway_server, reference_bundle):
    """Many clients at once: every answer is right (the in-process backend batches them)."""
    import concurrent.futures as cf

    def one(i):
        with httpx.Client(base_url=gateway_server, timeout=60) as c:
            return c.post("/v1/predict", json={"texts": TEXTS[i % 3]})

    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    want = reference_bundle.predict(TEXTS)
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        assert_same_predictions(r.json()["results"][0], want[i % 3])
