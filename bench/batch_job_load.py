"""What the batch-job benchmark and its integration test share: paced interactive callers over
HTTP, and a thin client of Ray's Jobs REST API (the dashboard's `/api/jobs/`).

`PacedInteractive` is open loop: a request every 1/rate seconds whether or not the earlier ones
came back (a closed loop slows down with the server and hides the misses), each from a pool of
threads, each judged at the client: on time is a 200 within the deadline, measured from the
send. The Jobs REST client uses httpx with the head's token rather than the SDK, so a caller in
a test process does not have to switch its own process into Ray's token mode.
"""
from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_RATE = re.compile(r"\[mtc-batch\] done: .*?\(([\d.,]+) records/s this run\)")


@dataclass
class Calls:
    sent: int = 0
    on_time: int = 0
    statuses: dict = field(default_factory=dict)
    latencies_s: list = field(default_factory=list)

    @property
    def attainment(self) -> float:
        return self.on_time / self.sent if self.sent else 1.0

    def p99_s(self) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class PacedInteractive:
    """`rate` interactive requests per second (one text each) until stopped; `with` starts it."""

    def __init__(self, url: str, rate: float, texts: list[str], *, deadline_ms: float = 1000.0,
                 api_key: str | None = None, tasks: list[str] | None = None):
        self.url, self.rate, self.texts, self.deadline_ms = url.rstrip("/"), rate, texts, deadline_ms
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.tasks = tasks
        self.calls = Calls()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(8, int(rate * 2)))
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._client = httpx.Client(timeout=max(5.0, 5 * deadline_ms / 1000.0),
                                    limits=httpx.Limits(max_connections=64))

    def _one(self, i: int) -> None:
        body = {"texts": self.texts[i % len(self.texts)], "priority": "interactive", "deadline_ms": self.deadline_ms}
        if self.tasks:
            body["tasks"] = self.tasks
        start = time.monotonic()
        try:
            status = self._client.post(self.url + "/v1/predict", json=body, headers=self.headers).status_code
        except httpx.HTTPError as err:
            status = type(err).__name__
        took = time.monotonic() - start
        with self._lock:
            self.calls.statuses[status] = self.calls.statuses.get(status, 0) + 1
            self.calls.latencies_s.append(took)
            if status == 200 and took <= self.deadline_ms / 1000.0:
                self.calls.on_time += 1

    def _tick(self) -> None:
        start, i = time.monotonic(), 0
        while not self._stop.is_set():
            due = start + i / self.rate
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            with self._lock:
                self.calls.sent += 1
            self._pool.submit(self._one, i)
            i += 1

    def __enter__(self) -> "PacedInteractive":
        self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._ticker.join(timeout=10)
        self._pool.shutdown(wait=True)
        self._client.close()


class JobsRest:
    """Ray's Jobs REST API at the dashboard: the state and log of a job."""

    def __init__(self, dashboard: str, token: str | None = None):
        self.dashboard = dashboard.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def info(self, job_id: str) -> dict:
        r = httpx.get(f"{self.dashboard}/api/jobs/{job_id}", headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()

    def logs(self, job_id: str) -> str:
        r = httpx.get(f"{self.dashboard}/api/jobs/{job_id}/logs", headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json().get("logs", "")

    def wait(self, job_id: str, timeout_s: float = 600.0, until: tuple[str, ...] = TERMINAL) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.info(job_id)
            if info["status"] in until:
                return info
            if info["status"] in TERMINAL or time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {info['status']}, not {until}: {info.get('message')}\n"
                                     + self.logs(job_id)[-3000:])
            time.sleep(0.5)


def job_rate(log: str) -> float:
    """The driver's records/s this run, from its summary line."""
    found = _RATE.findall(log)
    if not found:
        raise ValueError("no '[mtc-batch] done' line in the job's log:\n" + log[-2000:])
    return float(found[-1].replace(",", ""))
