"""Generative tasks in a batch job (issue 12): the driver sends one generator-pool job per record
and task beside the encoder job, in the same scheduler call, and writes a record's row only when
all are done; what cannot run is refused before any record is sent, saying what to change."""
import asyncio
import json

import pytest
from test_gateway_support import ScriptedBackend, _raw, random_bundle_path  # noqa: F401  (fixture)

from cluster.http.edge import Edge
from cluster.http.schemas import GatewaySettings
from cluster.jobs.driver import BatchDriver
from cluster.jobs.generation import check_generation, split_tasks
from cluster.jobs.spec import JobSpec, JobSpecError, check_tasks
from mtl.prompts import GENERATIVE_TASKS
from scheduler.config import GENERATOR_POOL
from scheduler.request import Outcome, Status


def summary_of(job):
    return {"text": f"summary of {job.payload['inputs']['text'][:12]}", "prompt_tokens": 20,
            "completion_tokens": 5, "finish_reason": "stop"}


def answer(job):
    if job.pool == GENERATOR_POOL:
        return Outcome(Status.DONE, result=summary_of(job))
    return Outcome(Status.DONE, result=_raw(job))


class CallCounting(ScriptedBackend):
    def __init__(self, script):
        super().__init__(script)
        self.calls: list[list] = []

    async def submit_many(self, jobs):
        self.calls.append(list(jobs))
        return await super().submit_many(jobs)


def write_input(path, n):
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"key": f"k{i}", "text": f"Record {i} about markets in Paris."}) + "\n")


def spec_for(tmp_path, **kw):
    return JobSpec(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"), id_field="key",
                   chunk_records=4, part_records=10, **kw)


def run(spec, bundle_path, backend, tasks):
    from mtl.bundle import load_bundle

    edge = Edge(load_bundle(bundle_path, weights=False), backend, GatewaySettings())
    driver = BatchDriver(spec, edge, tasks, out=lambda line: None)
    return asyncio.run(driver.run())


def rows(path):
    return [json.loads(line) for line in open(path)]


def test_a_record_gets_its_encoder_and_generated_results(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", 10)
    backend = CallCounting(answer)
    summary = run(spec_for(tmp_path, max_new_tokens=40), random_bundle_path, backend, ["topic", "summarize"])
    out = rows(tmp_path / "out.jsonl")
    assert summary.done == len(out) == 10 and summary.errors == 0
    assert [r["id"] for r in out] == [f"k{i}" for i in range(10)]
    assert out[3]["results"]["summarize"] == {"text": "summary of Record 3 abo", "finish_reason": "stop",
                                              "prompt_tokens": 20, "completion_tokens": 5}
    assert set(out[3]["results"]["topic"]) == {"label", "score", "scores"}
    # a chunk's encoder jobs in one call, its generator jobs in another (a call's jobs share a pool)
    assert [j.pool for j in backend.calls[0]] == ["encoder"] * 4
    assert [j.pool for j in backend.calls[1]] == [GENERATOR_POOL] * 4
    gen = backend.calls[1][0]
    assert gen.priority == "batch" and gen.tasks == ("summarize",) and gen.deadline_ms is None
    assert gen.payload == {"task": "summarize", "inputs": {"text": "Record 0 about markets in Paris."},
                           "max_new_tokens": 40, "temperature": 0.0, "top_p": 1.0, "stop": None}
    assert gen.num_tokens > 40  # the answer's decode is work the scheduler plans for


def test_generative_tasks_alone_send_no_encoder_job(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", 3)
    backend = CallCounting(answer)
    run(spec_for(tmp_path, target_language="French"), random_bundle_path, backend, ["translate"])
    assert {j.pool for call in backend.calls for j in call} == {GENERATOR_POOL}
    assert backend.calls[0][0].payload["inputs"] == {"text": "Record 0 about markets in Paris.",
                                                     "target": "French", "source": None}
    assert set(rows(tmp_path / "out.jsonl")[0]["results"]) == {"translate"}


def test_a_refused_generator_job_sends_the_whole_record_back_and_nothing_is_lost(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", 8)
    refused = {"left": 3}

    def script(job):
        if job.pool == GENERATOR_POOL and refused["left"] > 0:
            refused["left"] -= 1
            return Outcome(Status.REFUSED, error="busy", retry_after_s=0.01)
        return answer(job)

    summary = run(spec_for(tmp_path), random_bundle_path, CallCounting(script), ["topic", "summarize"])
    out = rows(tmp_path / "out.jsonl")
    assert summary.refusals >= 1 and summary.done == 8
    assert [r["id"] for r in out] == [f"k{i}" for i in range(8)]  # each once, none half-written
    assert all(set(r["results"]) == {"topic", "summarize"} for r in out)


def test_what_the_generator_cannot_run_is_a_final_error_row_naming_the_task(tmp_path, random_bundle_path):
    write_input(tmp_path / "in.jsonl", 4)

    def script(job):
        if job.pool == GENERATOR_POOL and "Record 2" in job.payload["inputs"]["text"]:
            return Outcome(Status.DONE, result={"error": "the prompt has 9000 tokens", "status": 413})
        return answer(job)

    summary = run(spec_for(tmp_path), random_bundle_path, CallCounting(script), ["topic", "summarize"])
    errors = rows(tmp_path / "out.jsonl.errors.jsonl")
    assert summary.done == 3 and [e["id"] for e in errors] == ["k2"]
    # final: a resume does not run it again (it would fail the same way)
    assert errors[0]["reason"] == "summarize: the generator refused it (413): the prompt has 9000 tokens"


def test_tasks_split_into_the_bundles_and_the_generative_ones():
    assert split_tasks(["summarize", "topic", "code"], ["topic", "entities"]) == (["topic"], ["summarize", "code"])
    assert split_tasks(["chat"], ["chat", "topic"]) == (["chat"], [])  # a bundle head named like a template


@pytest.mark.parametrize("kw, pools, message", [
    ({"standalone": True, "bundle": "b"}, None, "--standalone runs the encoder bundle only"),
    ({}, ["encoder"], "set `generator: {enabled: true}` in its serve.yaml"),
    ({}, None, "task 'translate' needs --target-language"),
])
def test_a_generative_job_that_cannot_run_is_refused_before_it_starts(tmp_path, kw, pools, message):
    spec = spec_for(tmp_path, **kw)
    with pytest.raises(JobSpecError, match=message.replace("{", r"\{").replace("}", r"\}").replace("-", r"\-")):
        check_generation(spec, ["summarize", "translate"], pools)
    check_generation(spec_for(tmp_path, target_language="German"), ["translate"], ["encoder", GENERATOR_POOL])


def test_generative_tasks_are_known_to_the_task_check(tmp_path):
    spec = spec_for(tmp_path, tasks=("topic", "summarize"))
    assert check_tasks(spec, ["topic", "entities"], GENERATIVE_TASKS) == ["topic", "summarize"]
    assert check_tasks(spec_for(tmp_path), ["topic", "entities"], GENERATIVE_TASKS) == ["topic", "entities"]
    with pytest.raises(JobSpecError, match=r"unknown task\(s\) \['poem'\]; the bundle's tasks are \['topic'\], "
                                           r"and the generative ones \['chat', 'summarize'"):
        check_tasks(spec_for(tmp_path, tasks=("poem",)), ["topic"], GENERATIVE_TASKS)


def test_generation_options_travel_to_the_driver_as_arguments(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    spec = spec_for(tmp_path, tasks=("translate",), max_new_tokens=99, target_language="French", language="Go")
    args = spec.cli_args()
    assert args[args.index("--max-new-tokens") + 1] == "99"
    assert args[args.index("--target-language") + 1] == "French" and "--source-language" not in args
    # the options `mtc batch run` takes are the ones the spec writes
    help_text = CliRunner().invoke(app, ["batch", "run", "--help"], terminal_width=200).output
    for option in ("--max-new-tokens", "--target-language", "--source-language", "--language"):
        assert option in help_text
