"""Batch jobs as a user runs them, on a `ray start --head` of this module's own (token auth) with
the real Serve application deployed by `mtc serve --address ... --detach`:

- `mtc submit` of 2,500 JSONL records while interactive callers send 10 req/s over HTTP with a
  1 s deadline: every id once, sampled rows equal to the HTTP API's answers, every interactive
  call answered and most on time; the attainment and the job's share of the capacity the
  interactive load leaves are printed (`mtc bench batch-job` measures them: wall-clock figures);
- cancel (`mtc jobs cancel`), resume, kill -9 of the driver, resume: the output a clean run
  writes, each id once;
- `ray job submit --working-dir . -- mtc batch run ... --standalone` (Ray Data), whose rows
  equal the served job's; `mtc jobs list|status|logs` on it;
- refusals before submission that name the missing file, the unknown task, the missing field.
"""

import json
import time

import httpx
import psutil
import pytest
import yaml

from bench.batch_job_load import JobsRest, PacedInteractive, job_rate
from bench.serve_load import sample_texts
from tests.net import free_port
from tests.predictions import assert_same_predictions
from tests.ray_head import BIN, operator_env, own_head, run_cli, squashed

pytestmark = pytest.mark.ray

INTERACTIVE_RATE = 10.0
JOB_RECORDS = 2500
RESUMED_RECORDS = 2000  # 20 parts of 100: cancelled after 3 or more, killed 3 parts later, the rest resumed
TEXTS = sample_texts()


@pytest.fixture(scope="module")
def head():
    yield from own_head(num_cpus=4)


@pytest.fixture(scope="module")
def app(head, tiny_bundle, tmp_path_factory):
    """The application on the head, as an operator deploys it; one encoder replica, so the idle
    and loaded phases run on the same capacity."""
    port = free_port()
    config = tmp_path_factory.mktemp("app") / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "bundle": str(tiny_bundle), "http": {"port": port},
        "encoder": {"num_cpus": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "scheduler": {"num_cpus": 0.25},
        "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "max_replicas": 1}},
    }))
    env = operator_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"], RAY_ADDRESS=head["gcs"])
    proc, _ = run_cli([BIN / "mtc", "serve", "--config", config, "--address", head["gcs"], "--detach"], env, timeout=300)
    assert proc.returncode == 0, squashed(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while httpx.get(url + "/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the application did not become healthy"
        time.sleep(1)
    return {"url": url, "env": env, "jobs": JobsRest(head["dashboard"], head["token"]), **head}


def write_jsonl(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"doc": f"doc-{i}", "body": TEXTS[i % len(TEXTS)]}) + "\n")
    return path


def submit(app, *args) -> str:
    proc, _ = run_cli([BIN / "mtc", "submit", *map(str, args), "--address", app["dashboard"],
                       "--text-field", "body", "--id-field", "doc"], app["env"])
    assert proc.returncode == 0, squashed(proc)
    return proc.stdout.strip().splitlines()[-1]


def rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.timeout(600)  # two jobs and a Ray Job round trip each; a slow CI machine needs room
def test_a_job_beside_interactive_callers_loses_nothing_and_starves_no_one(app, tmp_path):
    """What must hold on any machine: every record once, equal to the HTTP answer; every
    interactive call answered (200, or a 504/429 that says why); most of them on time, where a job
    served first-come would leave almost none (its 512 in-flight records queue ahead of them).

    The issue's figures (>= 99 % on time, the job >= 70 % of the capacity left) are wall-clock
    properties of the machine, so they are printed here and measured by `mtc bench batch-job` at
    1x, 2x and 4x (bench/reports/batch-job.md): on a CI machine slowed to 64 records/s (from ~95)
    this test saw 89 % on time with p99 1.7 s."""
    idle_job = submit(app, write_jsonl(tmp_path / "idle.jsonl", JOB_RECORDS), "--out", tmp_path / "idle-out.jsonl")
    app["jobs"].wait(idle_job, until=("SUCCEEDED",))
    idle_rate = job_rate(app["jobs"].logs(idle_job))

    with PacedInteractive(app["url"], INTERACTIVE_RATE, TEXTS[:50], deadline_ms=1000) as callers:
        time.sleep(2)  # the interactive load runs before the job starts and after it ends
        job = submit(app, write_jsonl(tmp_path / "in.jsonl", JOB_RECORDS), "--out", tmp_path / "out.jsonl")
        app["jobs"].wait(job, until=("SUCCEEDED",))
        time.sleep(1)
    loaded_rate = job_rate(app["jobs"].logs(job))
    calls = callers.calls
    leftover = idle_rate - INTERACTIVE_RATE  # each interactive call is one text: the capacity it takes
    share = loaded_rate / leftover
    print(f"\nidle job {idle_rate:.1f} records/s; beside {INTERACTIVE_RATE:.0f} interactive req/s: job "
          f"{loaded_rate:.1f} records/s = {100 * share:.1f} % of the {leftover:.1f} left; interactive "
          f"{calls.on_time}/{calls.sent} on time ({100 * calls.attainment:.2f} %), p99 {calls.p99_s():.3f} s, "
          f"statuses {calls.statuses}")
    assert calls.sent >= 50 and set(calls.statuses) <= {200, 429, 504}, calls.statuses  # no 5xx, no dropped call
    assert calls.attainment >= 0.5, calls.statuses
    assert share >= 0.3, (loaded_rate, idle_rate)  # the job keeps going beside them

    out = rows(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [f"doc-{i}" for i in range(JOB_RECORDS)]  # every id once, in order
    assert (tmp_path / "out.jsonl.errors.jsonl").read_text() == ""
    sample = out[::125]
    answer = httpx.post(app["url"] + "/v1/predict", timeout=60,
                        json={"texts": [TEXTS[(r["line"] - 1) % len(TEXTS)] for r in sample]})
    assert answer.status_code == 200, answer.text
    for row, http_result in zip(sample, answer.json()["results"]):
        assert_same_predictions(row["results"], http_result)


def _driver_of(output) -> psutil.Process | None:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "batch" in cmd and "run" in cmd and str(output) in cmd:
            return p
    return None


def _wait_for_parts(parts_dir, at_least: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(parts_dir.glob("part-*.jsonl"))) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} parts in {parts_dir}"
        time.sleep(0.2)


def test_cancel_and_a_killed_driver_resume_to_the_clean_output_each_id_once(app, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", RESUMED_RECORDS)
    clean = submit(app, source, "--out", tmp_path / "clean.jsonl")
    app["jobs"].wait(clean, until=("SUCCEEDED",))

    out, parts = tmp_path / "out.jsonl", tmp_path / "out.jsonl.parts"
    first = submit(app, source, "--out", out, "--part-records", 100)
    _wait_for_parts(parts, 3)
    proc, _ = run_cli([BIN / "mtc", "jobs", "cancel", first, "--address", app["dashboard"]], app["env"])
    assert proc.returncode == 0, squashed(proc)
    app["jobs"].wait(first, until=("STOPPED",))
    assert not out.exists()
    cancelled_at = len(list(parts.glob("part-*.jsonl")))

    second = submit(app, source, "--out", out, "--part-records", 100, "--resume")
    _wait_for_parts(parts, cancelled_at + 3)
    driver = _driver_of(out)
    assert driver is not None, "the second job's driver process was not found"
    driver.kill()  # kill -9: no chance to commit anything
    app["jobs"].wait(second, until=("FAILED",))

    third = submit(app, source, "--out", out, "--part-records", 100, "--resume")
    app["jobs"].wait(third, until=("SUCCEEDED",))
    log = app["jobs"].logs(third)
    assert "from an earlier run" in log and not parts.exists()

    got, want = rows(out), rows(tmp_path / "clean.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want] == [f"doc-{i}" for i in range(RESUMED_RECORDS)]
    for g, w in zip(got, want):
        assert_same_predictions(g["results"], w["results"])  # equal up to batching's float noise
    identical = sum(g == w for g, w in zip(got, want))
    print(f"\nresumed twice (cancel, kill -9): {identical} of {RESUMED_RECORDS} rows byte-identical to the clean run's, "
          f"the rest within 1e-4")


def test_ray_job_submit_runs_the_standalone_driver_with_the_same_rows(app, tmp_path, tiny_bundle):
    source = write_jsonl(tmp_path / "in.jsonl", 600)
    served = submit(app, source, "--out", tmp_path / "served.jsonl")
    env = {**app["env"], "RAY_ADDRESS": app["dashboard"]}
    proc, _ = run_cli([BIN / "ray", "job", "submit", "--no-wait", "--submission-id", "by-hand-standalone",
                       "--working-dir", ".", "--", "mtc", "batch", "run", source, "--out", tmp_path / "alone.jsonl",
                       "--text-field", "body", "--id-field", "doc", "--standalone", "--bundle", tiny_bundle],
                      env, timeout=180)
    assert proc.returncode == 0, squashed(proc)
    assert "very large" not in proc.stderr + proc.stdout, squashed(proc)  # the checkout, not a parent of it
    app["jobs"].wait(served, until=("SUCCEEDED",))
    app["jobs"].wait("by-hand-standalone", until=("SUCCEEDED",))
    alone, served_rows = rows(tmp_path / "alone.jsonl"), rows(tmp_path / "served.jsonl")
    assert [r["id"] for r in alone] == [r["id"] for r in served_rows] == [f"doc-{i}" for i in range(600)]
    for a, s in zip(alone, served_rows):
        assert_same_predictions(a["results"], s["results"])
    assert "map_batches" in app["jobs"].logs("by-hand-standalone")

    status, _ = run_cli([BIN / "mtc", "jobs", "status", "by-hand-standalone", "--address", app["dashboard"]], app["env"])
    assert status.returncode == 0 and "SUCCEEDED" in squashed(status), squashed(status)
    assert "600/600 records (100.0 %)" in squashed(status)
    listed, _ = run_cli([BIN / "mtc", "jobs", "list", "--address", app["dashboard"]], app["env"])
    assert served in squashed(listed) and "by-hand-standalone" not in squashed(listed)  # ours only
    logs, _ = run_cli([BIN / "mtc", "jobs", "logs", served, "--address", app["dashboard"]], app["env"])
    assert "[mtc-batch] done: 600 results" in logs.stdout


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "does not exist"),
    (["in.jsonl", "--tasks", "topic,toxicity"], "unknown task(s) ['toxicity']; the bundle's tasks are"),
    (["in.jsonl", "--text-field", "text"], "no field 'text' (--text-field); its fields are ['doc', 'body']"),
    # a generative task on an application without a generator (issue 12: jobs run them where there is one)
    (["in.jsonl", "--tasks", "topic,summarize"], "task(s) ['summarize'] need a generator, and application 'mtc' has none"),
])
def test_bad_jobs_are_refused_before_submission_naming_the_problem(app, tmp_path, args, message):
    write_jsonl(tmp_path / "in.jsonl", 5)
    first, *rest = args
    cmd = [BIN / "mtc", "submit", tmp_path / first, "--out", tmp_path / "out.jsonl", "--address", app["dashboard"]]
    if "--text-field" not in rest:
        rest += ["--text-field", "body"]
    proc, _ = run_cli(cmd + rest, app["env"])
    assert proc.returncode == 2 and message in squashed(proc), squashed(proc)
    assert "Traceback" not in proc.stderr

