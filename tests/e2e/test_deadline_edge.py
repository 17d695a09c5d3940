"""The deadline is the caller's, end to end on the served application: a request held up before
it reaches the scheduler is expired (504), never run and never counted as met; `timing` says
where the time of a served one went; what callers saw shows in `/v1/stats`."""
import json
import socket
import time
from urllib.parse import urlparse

import httpx


def _slow_post(url: str, path: str, body: dict, pause_s: float) -> tuple[int, dict]:
    """POST whose body arrives `pause_s` after its headers (a slow client or a congested hop)."""
    u = urlparse(url)
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(head + data[:5])
        time.sleep(pause_s)
        sock.sendall(data[5:])
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    header, _, payload = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in header.lower():
        size, _, rest = payload.partition(b"\r\n")
        payload = rest[: int(size, 16)]
    return status, json.loads(payload or b"{}")


def _edge(url: str) -> dict:
    """What callers saw, once the gateway's next report (every second) reached the scheduler."""
    time.sleep(1.5)
    return httpx.get(url + "/v1/stats", timeout=30).json().get("edge", {}).get("interactive", {})


def test_a_request_delayed_before_the_scheduler_is_expired_not_met(served):
    url = served.url
    ok = httpx.post(url + "/v1/predict", json={"texts": ["Markets rose."], "priority": "interactive",
                                               "deadline_ms": 5000}, timeout=30)
    assert ok.status_code == 200, ok.text
    timing = ok.json()["timing"]
    parts = timing["edge_ms"] + timing["queue_ms"] + timing["service_ms"] + timing["return_ms"]
    assert abs(parts - timing["total_ms"]) < 1.0
    before = _edge(url)
    runs = served.encoder_counters()["items"]

    status, body = _slow_post(url, "/v1/predict", {"texts": ["Markets fell."], "priority": "interactive",
                                                   "deadline_ms": 800}, pause_s=1.2)
    assert status == 504, body
    assert "before it reached the scheduler" in body["error"]
    assert served.encoder_counters()["items"] == runs  # never run

    after = _edge(url)
    assert after.get("met", 0) == before.get("met", 0)
    assert after.get("expired", 0) == before.get("expired", 0) + 1
