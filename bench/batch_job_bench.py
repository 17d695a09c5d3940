"""`mtc bench batch-job`: a batch job's throughput against the idle capacity, and what interactive
callers see while it runs, at 1x, 2x and 4x interactive load, side by side in one command.

Runs against a running cluster and application (`ray start --head`, then `mtc serve BUNDLE
--address auto --detach`), as a user's job would. Phases, each on the same application:
- raw: the bundle in this process on every core, batches of 32, no serving: the machine's best;
- idle: the job alone (`mtc submit`'s path: a Ray Job through the scheduler);
- per interactive rate R (1x, 2x, 4x of --rate): R req/s of single-text interactive requests
  with a 1 s deadline, first alone for --alone-s seconds, then beside the same job.
The job's share of the leftover capacity is its records/s over (idle records/s - R), as the
issue defines it. The client (this process: pacing threads and httpx) shares the machine's cores
with the servers, so its CPU share is reported.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from bench.batch_job_load import JobsRest, PacedInteractive, job_rate
from bench.serve_load import sample_texts

MODEL_BATCH = 32


def write_input(path: Path, records: int, texts: list[str]) -> Path:
    with path.open("w") as f:
        for i in range(records):
            f.write(json.dumps({"id": f"doc-{i}", "text": texts[i % len(texts)]}) + "\n")
    return path


def raw_rate(bundle_path: str, texts: list[str], n: int = 1024) -> float:
    """Records/s of the bundle in this process on all cores (tokenize, encode, every head)."""
    import torch  # noqa: PLC0415

    from mtl.bundle import load_bundle  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    bundle = load_bundle(bundle_path)
    tasks = list(bundle.tasks)
    batch = [texts[i % len(texts)] for i in range(MODEL_BATCH)]
    bundle.run_heads([e.input_ids for e in bundle.tokenize(batch, [tasks] * len(batch))], [tasks] * len(batch))
    start = time.perf_counter()
    for i in range(0, n, MODEL_BATCH):
        chunk = [texts[j % len(texts)] for j in range(i, i + MODEL_BATCH)]
        encs = bundle.tokenize(chunk, [tasks] * len(chunk))
        bundle.run_heads([e.input_ids for e in encs], [tasks] * len(chunk))
    return n / (time.perf_counter() - start)


class Bench:
    def __init__(self, dashboard: str, url: str, work_dir: Path, records: int, say=print):
        from cli.ray_auth import local_token  # noqa: PLC0415

        self.jobs = JobsRest(dashboard, local_token())
        self.dashboard, self.url, self.work_dir, self.records, self.say = dashboard, url, work_dir, records, say
        self.texts = sample_texts()
        self.input = write_input(work_dir / "input.jsonl", records, self.texts)
        self._runs = 0

    def run_job(self, yield_to_urgent: bool = False) -> tuple[float, str]:
        """Submit the job as `mtc submit` does, wait for it; (records/s, job id)."""
        from cli.ray_auth import prepare_jobs_api  # noqa: PLC0415
        from cluster.jobs.spec import JobSpec  # noqa: PLC0415
        from cluster.jobs.submit import submit  # noqa: PLC0415

        prepare_jobs_api()
        self._runs += 1
        out = self.work_dir / f"out-{self._runs}.jsonl"
        job_id = submit(JobSpec(input=str(self.input), output=str(out), id_field="id",
                                yield_to_urgent=yield_to_urgent), self.dashboard)
        self.jobs.wait(job_id, timeout_s=1800, until=("SUCCEEDED",))
        rate = job_rate(self.jobs.logs(job_id))
        yields = re.findall(r"refusals, ([\d,]+) yields", self.jobs.logs(job_id))
        self.say(f"[batch-job] job {job_id}: {rate:.1f} records/s, {yields[-1] if yields else '?'} yields"
                 + (" (--yield-to-urgent)" if yield_to_urgent else ""))
        return rate, job_id

    def interactive(self, rate: float, seconds: float | None, with_job: bool,
                    yield_to_urgent: bool = False) -> dict[str, Any]:
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        job_rate_ = None
        with PacedInteractive(self.url, rate, self.texts[:50]) as callers:
            if with_job:
                time.sleep(2)
                job_rate_, _ = self.run_job(yield_to_urgent)
                time.sleep(1)
            else:
                time.sleep(seconds or 15)
        wall = time.monotonic() - wall0
        calls = callers.calls
        row = {"rate": rate, "with_job": with_job, "sent": calls.sent, "on_time": calls.on_time,
               "attainment": calls.attainment, "p99_s": calls.p99_s(), "statuses": {str(k): v for k, v in calls.statuses.items()},
               "job_rate": job_rate_, "seconds": wall, "yield": yield_to_urgent,
               "client_cpu_share": (time.process_time() - cpu0) / (wall * (os.cpu_count() or 1))}
        self.say(f"[batch-job] {rate:g} interactive req/s {'beside the job' if with_job else 'alone'}: "
                 f"{calls.on_time}/{calls.sent} on time ({100 * calls.attainment:.2f} %), p99 "
                 f"{(calls.p99_s() or 0):.3f} s, client CPU {100 * row['client_cpu_share']:.1f} %")
        return row


def run(dashboard: str, url: str, bundle: str, work_dir: Path, records: int, base_rate: float,
        multiples: list[float], alone_s: float, ab_rounds: int = 0, say=print) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(dashboard, url, work_dir, records, say)
    raw = raw_rate(bundle, bench.texts)
    say(f"[batch-job] raw: {raw:.1f} records/s (this process, {os.cpu_count()} threads, batch {MODEL_BATCH})")
    idle, _ = bench.run_job()
    phases = []
    for m in multiples:
        rate = base_rate * m
        alone = bench.interactive(rate, alone_s, with_job=False)
        beside = bench.interactive(rate, None, with_job=True)
        leftover = idle - rate
        phases.append({"multiple": m, "rate": rate, "alone": alone, "beside": beside, "leftover": leftover,
                       "share_of_leftover": beside["job_rate"] / leftover if leftover > 0 else None,
                       "share_of_raw": beside["job_rate"] / raw})
    # The yield rule's A/B: the job beside the highest interactive load, with and without it,
    # alternated so that the machine's drift falls on both alike.
    ab = []
    for _ in range(ab_rounds):
        for yield_to_urgent in (False, True):
            ab.append(bench.interactive(base_rate * max(multiples), None, with_job=True,
                                        yield_to_urgent=yield_to_urgent))
    return {"ab": ab, "records": records, "raw_rate": raw, "idle_rate": idle, "idle_share_of_raw": idle / raw,
            "phases": phases, "cores": os.cpu_count(), "bundle": bundle, "dashboard": dashboard, "url": url}
