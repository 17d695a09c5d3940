"""The gateway's front door over a scripted backend: the caller's clock reaches the job, lower
classes are refused at the door before any work, and a late 200 is counted as a miss."""
import time

from test_gateway_support import ScriptedBackend, _raw, client_for, random_bundle_path  # noqa: F401

from cluster.http.front_door import peek_priority
from scheduler.request import Outcome, Status

CLASSES = ("interactive", "standard", "batch")


def test_jobs_carry_the_gateway_arrival_time(random_bundle_path):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend)
    before = time.time()
    r = c.post("/v1/predict", json={"texts": ["a b", "c d"], "priority": "interactive", "deadline_ms": 500})
    assert r.status_code == 200, r.text
    stamps = {job.received_at_s for job in backend.jobs}
    assert len(stamps) == 1  # one arrival for every text of the request
    (stamp,) = stamps
    assert before <= stamp <= time.time()


def test_lower_classes_are_refused_at_the_door_without_reaching_the_backend(random_bundle_path):
    backend = ScriptedBackend()
    c = client_for(random_bundle_path, backend,
                   front_door={"share": [1.0, 1.0, 0.0], "max_hold_s": 0.0})
    r = c.post("/v1/predict", json={"texts": "x y", "priority": "batch"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "refused at the gateway" in r.json()["error"]
    assert backend.jobs == []
    # V2's integer priority 3 is the same class; interactive still goes through
    r = c.post("/v2/models/topic/infer", json={"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES",
                                                           "data": ["x y"]}], "parameters": {"priority": 3}})
    assert r.status_code == 429 and backend.jobs == []
    assert c.post("/v1/predict", json={"texts": "x y", "priority": "interactive"}).status_code == 200
    counts = c.get("/v1/stats").json()["gateway"]["counts"]
    assert counts == {"batch:refused": 2, "interactive:met": 1}


def test_a_late_answer_is_counted_as_a_miss(random_bundle_path):
    def late(job):
        time.sleep(0.02)  # the result comes back after the 1 ms budget the scheduler applied
        return Outcome(Status.DONE, result=_raw(job), budget_s=0.001)

    c = client_for(random_bundle_path, ScriptedBackend(late))
    assert c.post("/v1/predict", json={"texts": "x y", "priority": "interactive"}).status_code == 200
    assert c.get("/v1/stats").json()["gateway"]["counts"] == {"interactive:late": 1}


def test_scheduler_refusals_close_the_door_for_that_class(random_bundle_path):
    backend = ScriptedBackend(lambda job: Outcome(Status.REFUSED, error="cannot meet deadline", retry_after_s=3.0))
    c = client_for(random_bundle_path, backend)
    assert c.post("/v1/predict", json={"texts": "x", "priority": "standard"}).status_code == 429
    assert len(backend.jobs) == 1
    # now the gateway answers standard (and batch) itself, for the Retry-After; it still asks for interactive
    c.app.state.front_door.limits = c.app.state.front_door.limits.__class__(max_hold_s=0.0)
    assert c.post("/v1/predict", json={"texts": "x", "priority": "batch"}).status_code == 429
    assert len(backend.jobs) == 1
    assert c.post("/v1/predict", json={"texts": "x", "priority": "interactive"}).status_code == 429
    assert len(backend.jobs) == 2


def test_peek_priority_reads_each_dialect_and_falls_back_to_the_default():
    assert peek_priority("/v1/predict", b'{"texts": "a", "priority": "batch"}', CLASSES, "standard") == "batch"
    assert peek_priority("/v2/models/t/infer", b'{"parameters": {"priority": 1}}', CLASSES, "standard") == "interactive"
    assert peek_priority("/v2/models/t/infer", b'{"parameters": {"priority": 9}}', CLASSES, "standard") == "batch"
    assert peek_priority("/v1/predict", b"not json", CLASSES, "standard") == "standard"
    assert peek_priority("/v1/predict", b'{"priority": "urgent"}', CLASSES, "standard") == "standard"
    # nested too deep for the json module (schemathesis found this as a 500)
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert peek_priority("/v2/models/t/infer", deep, CLASSES, "standard") == "standard"


def test_mtc_status_shows_what_callers_got():
    from rich.console import Console

    from cli.serve_cmds import stats_tables

    edge = {"interactive": {"met": 9, "late": 1, "refused": 0, "expired": 0, "failed": 0, "attainment": 0.9}}
    console = Console(width=120, record=True)
    for table in stats_tables({"classes": {}, "queued": {}, "edge": edge}):
        console.print(table)
    out = console.export_text()
    assert "at the caller (gateway)" in out and "90.0%" in out
