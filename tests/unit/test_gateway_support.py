"""Shared fixtures for the gateway unit tests: a real bundle with untrained heads (real tokenizer,
real encoder, every head type) and a scripted backend that returns chosen `Outcome`s.

The bundle is real so that tokenization, post-processing and the in-process backend are the
production code; only outcome statuses (refused/expired/failed) are scripted, because producing
them for real needs the scheduler under load.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cluster.backend import InProcessBackend
from cluster.http.app import build_gateway_app
from cluster.http.schemas import GatewaySettings
from scheduler.request import Job, Outcome, Status

TEXTS = ["Shares of Apple rose 3% after the earnings call in Zurich.",
         "Manchester United won the cup final at Wembley."]
TASKS = ("topic", "entities", "score", "tags", "embedding")


def make_random_bundle(out_dir):
    """A bundle of every head type on the offline MiniLM encoder, heads untrained (seeded)."""
    import torch
    from transformers import AutoTokenizer

    from mtl.bundle import save_bundle
    from mtl.config import default_encoder_path, parse_config
    from mtl.model import MultiTaskModel

    config = parse_config({"tasks": [
        {"name": "topic", "type": "classification", "data": {"format": "bbc"},
         "labels": ["business", "sport", "tech"]},
        {"name": "entities", "type": "token_classification", "data": {"format": "wnut16"},
         "labels": ["person", "location"], "max_length": 32},
        {"name": "score", "type": "regression", "data": {"format": "csv", "path": "x.csv"}},
        {"name": "tags", "type": "multilabel", "data": {"format": "csv", "path": "x.csv"},
         "labels": ["x", "y"]},
        {"name": "embedding", "type": "embedding", "max_length": 64},
    ]})
    specs = {t.name: t for t in config.tasks}
    torch.manual_seed(0)
    model = MultiTaskModel.from_pretrained(config.encoder, specs).eval()
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    return save_bundle(out_dir, model=model, tokenizer=tok, config=config, specs=specs)


@pytest.fixture(scope="session")
def random_bundle_path(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("gw") / "bundle")


@pytest.fixture(scope="session")
def heavy_bundle(random_bundle_path):
    from mtl.bundle import load_bundle

    return load_bundle(random_bundle_path)


class ScriptedBackend:
    """Records jobs; answers each with `script(job)` (an Outcome) or raises what it returns."""

    def __init__(self, script=None, ready=True):
        self.jobs: list[Job] = []
        self.script = script or (lambda job: Outcome(Status.DONE, result=_raw(job)))
        self._ready = ready

    async def submit(self, job: Job) -> Outcome:
        self.jobs.append(job)
        await asyncio.sleep(0)
        out = self.script(job)
        if isinstance(out, BaseException):
            raise out
        return out

    async def submit_many(self, jobs: list[Job]) -> list[Outcome]:
        return list(await asyncio.gather(*(self.submit(job) for job in jobs)))

    async def stream(self, job):
        yield ""

    async def stats(self) -> dict:
        return {"jobs": len(self.jobs), "np": np.float32(1.5), "status": Status.DONE}

    async def ready(self) -> bool:
        return self._ready


def _raw(job: Job) -> dict:
    n = len(job.payload.input_ids)
    out = {}
    for t in job.tasks:
        if t == "topic":
            out[t] = np.array([0.2, 0.5, 0.3], dtype=np.float32)
        elif t == "entities":
            probs = np.zeros((n, 5), dtype=np.float32)
            probs[:, 0] = 1.0
            out[t] = probs
        elif t == "score":
            out[t] = np.array([0.25], dtype=np.float32)
        elif t == "tags":
            out[t] = np.array([0.9, 0.1], dtype=np.float32)
        else:
            out[t] = np.ones(384, dtype=np.float32) / np.sqrt(384)
    return out


def client_for(bundle_path, backend, **settings) -> TestClient:
    from mtl.bundle import load_bundle

    app = build_gateway_app(backend, GatewaySettings(**settings),
                            bundle=load_bundle(bundle_path, weights=False))
    return TestClient(app, raise_server_exceptions=False)


def in_process(heavy_bundle, random_bundle_path, **settings) -> TestClient:
    return client_for(random_bundle_path, InProcessBackend(heavy_bundle), **settings)


def test_scripted_backend_answers_every_task(random_bundle_path):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend)
    r = c.post("/v1/predict", json={"texts": TEXTS[0]})
    assert r.status_code == 200, r.text
    assert set(r.json()["results"][0]) == set(TASKS)
    assert r.json()["results"][0]["topic"]["label"] == "sport"
