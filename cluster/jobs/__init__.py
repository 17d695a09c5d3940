"""Batch jobs: a file of records through the running application's scheduler, as a Ray Job.

- `spec`: what a job is asked to do (`JobSpec`) and the checks that refuse it before it runs
- `records`: the input (CSV, JSONL, Parquet; local or any fsspec URI) as records and bad rows
- `flow`: how much the job keeps in flight (an AIMD window over the scheduler's answers)
- `parts`: exactly-once output in atomically committed parts; resume; assembling the output
- `progress`: done of total, records/s, ETA and refusals, as a log line `mtc jobs status` reads
- `driver`: the core loop (no Ray); `connect`: its Ray side; `standalone`: Ray Data map_batches
- `submit`: the Ray Jobs SDK (`JobSubmissionClient`): submit, list, status, logs, cancel
"""
from cluster.jobs.spec import JobSpec, JobSpecError

__all__ = ["JobSpec", "JobSpecError"]
