"""The batch driver's core loop over a scripted scheduler (no Ray): every row ends once, refusals
back off and lose nothing, failures become error rows a resume retries, a stopped job resumes to
the output a clean run writes, and nothing is overwritten without --resume."""

import asyncio
import json

import pyarrow.parquet as pq
import pytest
from test_gateway_support import ScriptedBackend, _raw, random_bundle_path  # noqa: F401  (fixture)

from cluster.http.edge import Edge
from cluster.http.schemas import GatewaySettings
from cluster.jobs.driver import BatchDriver
from cluster.jobs.parts import PartStore
from cluster.jobs.spec import JobSpec, JobSpecError
from scheduler.request import Outcome, Status

TASKS = ["topic", "entities"]


def write_input(path, n=120, bad_every=0):
    with path.open("w") as f:
        for i in range(n):
            text = "   " if bad_every and i % bad_every == 0 else f"Record {i} about markets in Paris."
            f.write(json.dumps({"key": f"k{i}", "text": text}) + "\n")


def edge_for(bundle_path, backend):
    from mtl.bundle import load_bundle

    return Edge(load_bundle(bundle_path, weights=False), backend, GatewaySettings())


def run(spec, bundle_path, backend, **kw):
    driver = BatchDriver(spec, edge_for(bundle_path, backend), TASKS, out=lambda line: None, **kw)
    return driver, asyncio.run(driver.run())


def rows(path):
    return [json.loads(line) for line in open(path)]


def make_spec(tmp_path, **kw):
    values = {"input": str(tmp_path / "in.jsonl"), "output": str(tmp_path / "out.jsonl"), "id_field": "key",
              "chunk_records": 8, "part_records": 20, **kw}
    return JobSpec(**values)


def test_every_row_ends_once_in_input_order_with_the_gateways_results(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", bad_every=10)
    backend = ScriptedBackend()
    _, summary = run(make_spec(tmp_path), random_bundle_path, backend)
    out, errors = rows(tmp_path / "out.jsonl"), rows(tmp_path / "out.jsonl.errors.jsonl")
    assert summary.done == len(out) == 108 and summary.errors == len(errors) == 12
    assert [r["line"] for r in out] == sorted(r["line"] for r in out)
    assert {r["id"] for r in out} | {e["id"] for e in errors} == {f"k{i}" for i in range(120)}
    assert errors[0] == {"file": str(tmp_path / "in.jsonl"), "line": 1, "id": "k0",
                         "reason": "'text' is empty or whitespace; send non-empty text"}
    # each row is what the gateway makes of the head outputs; jobs ran at the batch class
    assert set(out[0]["results"]) == set(TASKS) and out[0]["results"]["topic"]["label"] == "sport"
    assert {job.priority for job in backend.jobs} == {"batch"} and len(backend.jobs) == 108
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_refusals_back_off_by_retry_after_and_lose_nothing(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", n=64)
    calls = {"n": 0}

    def script(job):
        calls["n"] += 1
        if calls["n"] <= 24:  # the first three chunks' worth of jobs are refused
            return Outcome(Status.REFUSED, error="queue full", retry_after_s=0.05)
        if calls["n"] % 7 == 0:
            return Outcome(Status.EXPIRED, error="deadline passed")
        return Outcome(Status.DONE, result=_raw(job))

    _, summary = run(make_spec(tmp_path), random_bundle_path, ScriptedBackend(script))
    assert summary.done == 64 and summary.errors == 0
    assert summary.refusals >= 1 and summary.expired > 0
    assert sorted(r["id"] for r in rows(tmp_path / "out.jsonl")) == sorted(f"k{i}" for i in range(64))


def test_a_record_the_model_keeps_failing_is_an_error_row_that_a_resume_retries(tmp_path, random_bundle_path):
    from mtl.bundle import load_bundle

    write_input(tmp_path / "in.jsonl", n=20)
    poison = tuple(load_bundle(random_bundle_path, weights=False)
                   .tokenize(["Record 3 about markets in Paris."], [TASKS])[0].input_ids)
    healed = {"yet": False}

    def script(job):
        if job.payload.input_ids == poison and not healed["yet"]:
            return Outcome(Status.FAILED, error="replica error")
        return Outcome(Status.DONE, result=_raw(job))

    backend = ScriptedBackend(script)
    _, summary = run(make_spec(tmp_path), random_bundle_path, backend)
    errors = rows(tmp_path / "out.jsonl.errors.jsonl")
    assert [e["id"] for e in errors] == ["k3"] and summary.done == 19
    assert errors[0]["reason"] == "the model failed it 3 times: replica error"
    assert sum(job.payload.input_ids == poison for job in backend.jobs) == 3  # tried 3 times, no more

    # not a final error: once the model is fixed, a resume of the same output runs it again
    (tmp_path / "out.jsonl").rename(tmp_path / "first.jsonl")
    healed["yet"] = True
    store = PartStore(make_spec(tmp_path, resume=True))
    assert len(store.start(TASKS)) == 0  # the parts were assembled and removed: nothing to resume


def test_a_stopped_job_resumes_to_the_clean_runs_output_without_rerunning_what_is_done(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", n=100, bad_every=13)
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    run(make_spec(tmp_path, output=str(clean_dir / "out.jsonl")), random_bundle_path, ScriptedBackend())

    holder = {}

    def stop_after_some(job):
        if len(holder["backend"].jobs) >= 50:
            holder["driver"].stop()  # what SIGTERM (mtc jobs cancel) does
        return Outcome(Status.DONE, result=_raw(job))

    spec = make_spec(tmp_path)
    backend = holder["backend"] = ScriptedBackend(stop_after_some)
    driver = holder["driver"] = BatchDriver(spec, edge_for(random_bundle_path, backend), TASKS, out=lambda line: None)
    first = asyncio.run(driver.run())
    assert first.stopped and not (tmp_path / "out.jsonl").exists()
    committed = len(PartStore(make_spec(tmp_path, resume=True)).start(TASKS).ids)
    assert committed >= 40  # what came back before the stop was committed, not lost

    with pytest.raises(JobSpecError, match="pass --resume to continue it"):
        run(spec, random_bundle_path, ScriptedBackend())
    with pytest.raises(JobSpecError, match="computed for"):
        BatchDriver(make_spec(tmp_path, resume=True), None, ["topic"]).store.start(["topic"])

    again = ScriptedBackend()
    _, second = run(make_spec(tmp_path, resume=True), random_bundle_path, again)
    assert len(again.jobs) == 100 - 8 - committed  # only what was not committed ran again
    assert not second.stopped and second.done == 92
    assert (tmp_path / "out.jsonl").read_text() == (clean_dir / "out.jsonl").read_text()
    assert (tmp_path / "out.jsonl.errors.jsonl").read_text().replace(str(tmp_path), "") == \
           (clean_dir / "out.jsonl.errors.jsonl").read_text().replace(str(tmp_path), "")

    with pytest.raises(JobSpecError, match="exists; choose another --out"):
        run(make_spec(tmp_path, output=str(tmp_path / "out.jsonl")), random_bundle_path, ScriptedBackend())


def test_a_kill_mid_write_leaves_no_half_part_and_resume_runs_each_id_once(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", n=40)
    spec = make_spec(tmp_path)
    store = PartStore(spec)
    store.start(TASKS)
    store.commit([{"line": 1, "id": "k0", "results": {"topic": {}, "entities": {}}}])
    (tmp_path / "out.jsonl.parts" / "part-dead-00001.jsonl.tmp-1234").write_text('{"line": 2, "id"')  # torn write
    again = ScriptedBackend()
    run(make_spec(tmp_path, resume=True), random_bundle_path, again)
    out = rows(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [f"k{i}" for i in range(40)] and len(again.jobs) == 39


def test_parquet_output_has_one_row_per_record_with_the_results_as_json(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", n=30)
    run(make_spec(tmp_path, output=str(tmp_path / "out.parquet")), random_bundle_path, ScriptedBackend())
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["id", "line", "results"] and table.num_rows == 30
    assert set(json.loads(table.column("results")[0].as_py())) == set(TASKS)


def test_input_and_output_may_be_fsspec_uris(tmp_path, random_bundle_path):
    import fsspec

    write_input(tmp_path / "in.jsonl", n=25)
    fs = fsspec.filesystem("memory")
    fs.pipe("/jobs/in.jsonl", (tmp_path / "in.jsonl").read_bytes())
    spec = JobSpec(input="memory://jobs/in.jsonl", output="memory://jobs/out.jsonl", id_field="key", part_records=10)
    _, summary = run(spec, random_bundle_path, ScriptedBackend())
    out = [json.loads(line) for line in fs.cat("/jobs/out.jsonl").decode().splitlines()]
    assert summary.done == 25 and [r["id"] for r in out] == [f"k{i}" for i in range(25)]
    assert fs.cat("/jobs/out.jsonl.errors.jsonl") == b"" and not fs.exists("/jobs/out.jsonl.parts")


def test_the_job_yields_when_a_more_urgent_caller_misses(tmp_path, random_bundle_path, monkeypatch):
    """A new interactive miss in the scheduler's stats halves the window and pauses the job."""
    import time

    import cluster.jobs.driver as driver_module

    monkeypatch.setattr(driver_module, "YIELD_PAUSE_S", 0.3)
    monkeypatch.setattr(driver_module, "STATS_EVERY_S", 0.05)
    write_input(tmp_path / "in.jsonl", n=400)
    sent_at = []

    class Busy(ScriptedBackend):
        polls = 0

        async def submit(self, job):
            sent_at.append(time.monotonic())
            await asyncio.sleep(0.02)  # a model that takes time, so the job spans several looks
            return await super().submit(job)

        async def stats(self):
            Busy.polls += 1
            return {"classes": {"interactive": {}, "batch": {}},
                    "edge": {"interactive": {"late": 0 if Busy.polls < 3 else 1}}}  # one miss, on the 3rd look

    driver, summary = run(make_spec(tmp_path, max_inflight_records=32, yield_to_urgent=True), random_bundle_path, Busy())
    assert summary.yields == 1 and summary.done == 400
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert max(gaps) >= 0.25  # the pause: nothing was sent for about YIELD_PAUSE_S


def test_a_scheduler_that_only_expires_ends_the_job_with_what_is_done_kept(tmp_path, random_bundle_path):
    """ServeBackend answers EXPIRED once a lost scheduler never came back: the job must end, saying
    so, not retry forever; what it finished stays committed for --resume."""
    from cluster.jobs.driver import BackendGone

    write_input(tmp_path / "in.jsonl", n=400)
    calls = {"n": 0}

    def script(job):
        calls["n"] += 1
        return Outcome(Status.DONE, result=_raw(job)) if calls["n"] <= 40 else Outcome(Status.EXPIRED, error="gone")

    with pytest.raises(BackendGone, match="in a row expired.*Resubmit with --resume"):
        run(make_spec(tmp_path), random_bundle_path, ScriptedBackend(script))
    assert len(PartStore(make_spec(tmp_path, resume=True)).start(TASKS).ids) == 40
