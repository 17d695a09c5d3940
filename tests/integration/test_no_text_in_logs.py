"""No request text in any log (issue 10, finding 15, privacy), on the real Serve application.

The worst case an operator may configure: Serve's access log on for the gateway, scheduler and
encoder, Serve's own loggers and every worker's root logger (the `mtc.*` loggers) at DEBUG, in
JSON (which escapes what a text line cannot encode: a lone surrogate does not hide a line).
Unique marker words go through every route, in requests that succeed and in requests that fail in each
way the gateway knows (too long, too many, body too big, lone surrogate, malformed JSON, unknown
task, unknown field, wrong type, a deadline that cannot be met, markers in the path and in the query
string), and then every file under the Ray session's log directory is searched for each marker.
The callers may see their own text in their error answers; the logs may not.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from cluster import serve_config as serve_config_module
from cluster.app import build_application
from cluster.serve_config import parse_serve_config
from tests.net import free_port

pytestmark = pytest.mark.ray

APP = "mtc-privacy"
LIMITS = {"max_text_chars": 200, "max_texts_per_request": 4, "max_body_bytes": 20_000}
CONFIG = {
    "app_name": APP,
    "encoder": {"num_cpus": 0.5, "access_log": True, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    "scheduler": {"num_cpus": 0.25, "access_log": True},
    "gateway": {"num_cpus": 0.25, "access_log": True, "settings": LIMITS,
                "autoscaling": {"policy": "ongoing_requests", "min_replicas": 1, "max_replicas": 1}},
}


# JSON lines escape what a text line cannot encode (a lone surrogate): the worst case.
SERVE_LOGGING = {"encoding": "JSON", "log_level": "DEBUG", "enable_access_log": True}


def _debug_access_log(enabled: bool) -> dict:
    # serve.yaml sets only `enable_access_log`; an operator's `serve deploy` file may say the rest.
    return {"logging_config": {**SERVE_LOGGING, "enable_access_log": enabled}}


@pytest.fixture(scope="module")
def served(tiny_bundle):
    port = free_port()
    # Every worker's root logger (where `mtc.*` records go) at DEBUG, and Serve's too (below).
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_config=ray.LoggingConfig(encoding="JSON", log_level="DEBUG"))
    for noisy in ("httpx", "httpcore"):  # the driver's own DEBUG lines (not in the session's files)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=SERVE_LOGGING)
        config = parse_serve_config({**CONFIG, "bundle": str(tiny_bundle)})
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(serve_config_module, "_access_log", _debug_access_log)
            app = build_application(config)
        serve.run(app, name=APP, route_prefix="/", logging_config=SERVE_LOGGING)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while httpx.get(url + "/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the application did not become ready"
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def _marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


def _v2_input(texts: list[str]) -> dict:
    return {"name": "TEXT", "datatype": "BYTES", "shape": [len(texts)], "data": texts}


def _v2_binary(texts: list[str], request_id: str) -> tuple[bytes, dict]:
    import numpy as np
    import tritonclient.http as th

    inp = th.InferInput("TEXT", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=True)
    body, json_size = th.InferenceServerClient.generate_request_body(
        [inp], outputs=[th.InferRequestedOutput("LABEL", binary_data=True)], request_id=request_id)
    return body, {"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"}


def _requests(url: str) -> list[tuple[str, list[str], set[int], httpx.Request]]:
    """(case, its markers, the statuses it may get, the request)."""
    out = []

    def add(case: str, markers: list[str], statuses: set[int], method: str, path: str, **kwargs):
        out.append((case, markers, statuses, httpx.Request(method, url + path, **kwargs)))

    def text(m: str) -> str:
        return f"Shares of {m} rose in London after the results."

    raw = {"Content-Type": "application/json"}
    m = [_marker() for _ in range(40)]
    add("native single", [m[0]], {200}, "POST", "/v1/predict",
        json={"texts": text(m[0]), "tasks": ["topic"], "deadline_ms": 30_000})
    add("native list", m[1:3], {200}, "POST", "/v1/predict",
        json={"texts": [text(m[1]), text(m[2])], "tasks": ["topic", "entities"], "deadline_ms": 30_000})
    add("v2 json", m[3:5], {200}, "POST", "/v2/models/topic/infer",
        json={"id": m[4], "inputs": [_v2_input([text(m[3])])], "parameters": {"timeout": 30_000_000}})
    body, headers = _v2_binary([text(m[5])], request_id=m[6])
    add("v2 binary", m[5:7], {200}, "POST", "/v2/models/topic/infer", content=body, headers=headers)
    add("text over max_text_chars", [m[7]], {413}, "POST", "/v1/predict",
        json={"texts": text(m[7]) + " padding" * 40})
    add("too many texts", m[8:13], {413}, "POST", "/v1/predict", json={"texts": [text(x) for x in m[8:13]]})
    add("body over max_body_bytes", [m[13]], {413}, "POST", "/v1/predict",
        json={"texts": text(m[13]) + " padding" * 3000})
    add("lone surrogate", [m[14]], {400}, "POST", "/v1/predict", headers=raw,
        content=b'{"texts": "' + text(m[14]).encode() + b' \\ud800 end"}')
    add("malformed JSON", [m[15]], {400}, "POST", "/v1/predict", headers=raw,
        content=b'{"texts": "' + text(m[15]).encode() + b'", "tasks": [}')
    add("unknown task", m[16:18], {404}, "POST", "/v1/predict",
        json={"texts": text(m[16]), "tasks": [f"task-{m[17]}"]})
    add("deadline too short", [m[18]], {429, 504}, "POST", "/v1/predict",
        json={"texts": text(m[18]), "tasks": ["topic"], "priority": "interactive", "deadline_ms": 0.01})
    add("unknown field", m[19:21], {422}, "POST", "/v1/predict",
        json={"texts": text(m[19]), f"field-{m[20]}": text(m[20])})
    add("wrong type", m[21:23], {422}, "POST", "/v1/predict",
        json={"texts": text(m[21]), "deadline_ms": text(m[22])})
    add("text in the query string", m[23:25], {200}, "POST", f"/v1/predict?text={m[23]}",
        json={"texts": text(m[24]), "tasks": ["topic"], "deadline_ms": 30_000})
    add("query string on a GET", [m[25]], {200}, "GET", f"/v1/tasks?text={m[25]}")
    add("marker in an unknown path", [m[26]], {404}, "GET", f"/v1/{m[26]}")
    add("v2 unknown model (path)", m[27:29], {404}, "POST", f"/v2/models/{m[27]}/infer",
        json={"inputs": [_v2_input([text(m[28])])]})
    add("v2 text over max_text_chars", [m[29]], {413}, "POST", "/v2/models/topic/infer",
        json={"inputs": [_v2_input([text(m[29]) + " padding" * 40])]})
    add("v2 bad priority", m[30:32], {400}, "POST", "/v2/models/topic/infer",
        json={"inputs": [_v2_input([text(m[30])])], "parameters": {"priority": m[31]}})
    add("v2 malformed JSON", [m[32]], {400}, "POST", "/v2/models/topic/infer", headers=raw,
        content=b'{"inputs": [{"name": "TEXT", "data": ["' + m[32].encode() + b'"')
    add("v2 lone surrogate", [m[33]], {400}, "POST", "/v2/models/topic/infer", headers=raw,
        content=json.dumps({"inputs": [_v2_input(["@@"])]}).encode().replace(
            b"@@", text(m[33]).encode() + b" \\ud800"))
    add("v2 deadline too short", [m[34]], {429, 504}, "POST", "/v2/models/topic/infer",
        json={"inputs": [_v2_input([text(m[34])])], "parameters": {"priority": 1, "timeout": 10}})
    # A lone surrogate echoed in an error message could not be encoded: 500, and the traceback of
    # the failed answer (the caller's text in its message) went to the gateway's log.
    add("lone surrogate in the priority", [m[36]], {422}, "POST", "/v1/predict", headers=raw,
        content=b'{"texts": "hello", "priority": "' + m[36].encode() + b' \\ud800"}')
    add("lone surrogate in a task", [m[37]], {404}, "POST", "/v1/predict", headers=raw,
        content=b'{"texts": "hello", "tasks": ["' + m[37].encode() + b' \\ud800"]}')
    add("wrong method, marker in the path", [m[35]], {404, 405}, "DELETE", f"/v1/predict/{m[35]}")
    return out


def _log_files(session_logs: Path) -> list[Path]:
    return [p for p in sorted(session_logs.rglob("*")) if p.is_file()]


def test_no_request_text_reaches_any_log(served):
    session_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"  # noqa: SLF001
    cases = _requests(served)
    wrong = []  # reported with the leaks: a request that failed the wrong way may be what leaked
    with httpx.Client(timeout=60) as client:
        for case, _, allowed, request in cases:
            r = client.send(request)
            if r.status_code not in allowed or "Traceback" in r.text:
                wrong.append(f"{case}: {r.status_code} {r.text[:200]}")
    time.sleep(4)  # let every process write and flush its lines

    files = _log_files(session_logs)
    assert any(p.parent.name == "serve" for p in files), f"no Serve log files under {session_logs}"
    access_lines = [line for p in files if p.parent.name == "serve"
                    for line in p.read_text(errors="replace").splitlines() if "/v1/predict" in line]
    assert access_lines, "Serve's access log wrote no line: the test does not test what it claims"

    markers = {m: case for case, ms, _, _ in cases for m in ms}
    leaks = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"marker-" not in data:
            continue
        for n, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            for marker, case in markers.items():
                if marker in line:
                    at = max(0, line.index(marker) - 120)
                    leaks.append(f"{path.relative_to(session_logs)}:{n} ({case}): ...{line[at:at + 240]}")
    if leaks or wrong:  # pytest.fail: an assert's message would be cut to a few lines
        pytest.fail(f"request text in {len(leaks)} log line(s):\n" + "\n".join(leaks[:40])
                    + f"\n{len(wrong)} answer(s) not as expected:\n" + "\n".join(wrong), pytrace=False)
