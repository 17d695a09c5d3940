"""`SteadyLoad`: closed-loop callers of /v1/predict in threads, for the chaos tests (a process or
a node is killed while they send). Each caller sends one request at a time, so the load is steady
and never overload; every answer is counted by status, and a request that got none ("no answer":
a dropped connection) is counted too, so a lost request cannot pass unseen."""
from __future__ import annotations

import threading
from collections import Counter

import httpx


class SteadyLoad:
    def __init__(self, url: str, *, callers: int = 4, deadline_ms: int = 20_000):
        self.url, self.deadline_ms = url, deadline_ms
        self.answers: Counter = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(callers)]

    @property
    def callers(self) -> int:
        return len(self._threads)

    def total(self) -> int:
        return sum(self.answers.values())

    def _call(self) -> None:
        with httpx.Client(timeout=90) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url + "/v1/predict", json={
                        "texts": "Shares rose in London.", "tasks": ["topic"], "priority": "interactive",
                        "deadline_ms": self.deadline_ms})
                    self.answers[r.status_code] += 1
                    if r.status_code != 200:
                        self.errors.append(r.text[:300])
                except httpx.HTTPError as err:  # no answer at all: a lost request
                    self.answers["no answer"] += 1
                    self.errors.append(repr(err))

    def __enter__(self) -> SteadyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def summary(self) -> tuple[dict, list[str]]:
        """(answers by status, the first few error bodies): an assertion's message."""
        return dict(self.answers), self.errors[:5]
