"""The batch job's driver: records from the input, through the running application's scheduler
at the batch class, into committed parts; no Ray import here (cluster/jobs/connect.py wires it).

Design note, the core loop. One asyncio loop; each scheduler call carries one chunk of records
(tokenized by the gateway's own `Edge.encode_jobs`, admitted all or nothing like an HTTP request);
generative tasks add a second call beside it, to the generator pool (cluster/jobs/generation.py),
and a record is done when all its jobs are.
- *Send* while the AIMD window (cluster/jobs/flow.py) has room and no refusal pause is running;
  rows that are bad go straight to the errors, without a call.
- *Receive*: a done record becomes a result row (the gateway's `Edge.results_of`, so it equals the
  HTTP answer); a refused chunk goes back to the front of the line and halves the window; an
  expired record goes back too (a batch deadline passing in the queue is load, not the record's
  fault); a failed one is tried MAX_ATTEMPTS times, then written as a non-final error row that a
  resume tries again. Nothing taken from the input is dropped: every record ends in a row.
- *Yield*: every STATS_EVERY_S the scheduler's stats say whether a more urgent caller missed
  since the last look; if one did, the window halves and sending pauses (cluster/jobs/flow.py).
- *Commit* a part whenever part_records rows are buffered (cluster/jobs/parts.py); at the end,
  assemble the output. SIGTERM (`mtc jobs cancel`: Ray gives a few seconds before SIGKILL)
  commits what is buffered and stops; `--resume` goes on from there.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from cluster.http.errors import ApiError
from cluster.jobs.flow import YIELD_PAUSE_S, Window, on_done, on_refused, urgent_misses
from cluster.jobs.generation import generation_job, generation_result, split_tasks
from cluster.jobs.parts import Done, PartStore, error_row, result_row
from cluster.jobs.progress import Progress
from cluster.jobs.records import BadRow, Record, count_rows, read_records
from cluster.jobs.spec import JobSpec
from scheduler.request import Status

log = logging.getLogger("mtc.batch")
MAX_ATTEMPTS = 3  # scheduler calls that failed a record (a model error) before its error row
MAX_BACKEND_ERRORS = 20  # consecutive calls that raised (no scheduler at all) before the job gives up
BACKEND_ERROR_PAUSE_S = 1.0
STOP_POLL_S = 0.25
STATS_EVERY_S = 0.5  # how often the job reads the scheduler's counts of more urgent misses


# A record's status from its jobs' (one per task kind): any refusal sends it back whole, then
# expiry, then failure; done only when every job is.
_PRECEDENCE = (Status.REFUSED, Status.EXPIRED, Status.FAILED, Status.CANCELLED)


def _worst(outcomes: list) -> Status:
    statuses = {o.status for o in outcomes}
    return next((s for s in _PRECEDENCE if s in statuses), Status.DONE)


class BackendGone(RuntimeError):
    """The scheduler raised on every call for MAX_BACKEND_ERRORS calls in a row."""


@dataclass(frozen=True)
class JobSummary:
    total: int
    done: int  # results in the output (stopped: committed so far)
    errors: int  # rows in the errors file (stopped: this run's)
    already: int  # done by an earlier run (resumed)
    seconds: float
    refusals: int
    yields: int
    expired: int
    stopped: bool  # cancelled: parts committed, output not assembled yet
    output: str
    errors_output: str

    def line(self) -> str:
        if self.stopped:
            return (f"[mtc-batch] stopped with {self.already + self.done:,} of {self.total:,} records "
                    f"committed; resubmit with --resume to finish")
        rate = (self.done - self.already) / self.seconds if self.seconds > 0 else 0.0
        return (f"[mtc-batch] done: {self.done:,} results ({self.already:,} from an earlier run), "
                f"{self.errors:,} errors, of {self.total:,} rows in {self.seconds:.1f} s "
                f"({rate:.1f} records/s this run), {self.refusals:,} refusals, {self.yields:,} yields; "
                f"output {self.output}, errors {self.errors_output}")


def text_checker(edge: Any, field: str) -> Callable[[str], str | None]:
    """The gateway's own text checks (empty, too long, not valid Unicode) as a reason or None."""
    def check(text: str) -> str | None:
        try:
            edge.check_text(text, field)
        except ApiError as err:
            return err.message
        return None
    return check


class BatchDriver:
    def __init__(self, spec: JobSpec, edge: Any, tasks: list[str], *, out: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.edge = edge  # cluster.http.edge.Edge over a Backend (ServeBackend in a real job)
        self.tasks = tasks
        # the bundle's tasks (one encoder job a record) and the generative ones (a generator job
        # a record and task): cluster/jobs/generation.py
        self.encoder_tasks, self.generative = split_tasks(tasks, edge.task_names if edge is not None else tasks)
        self.out = out
        self.clock = clock
        self.store = PartStore(spec)
        self.stopping = False
        self._buffer: list[dict] = []
        self._retry: collections.deque[Record] = collections.deque()
        self._attempts: collections.Counter[int] = collections.Counter()
        self._exhausted = False
        self._misses: int | None = None  # more urgent classes' misses at the last look
        self._expired_streak = 0  # chunks in a row that all expired: no scheduler to answer them

    def stop(self) -> None:
        self.stopping = True

    def _pending(self, done: Done) -> Iterator[Record | BadRow]:
        for item in read_records(self.spec, text_checker(self.edge, self.spec.text_field)):
            if isinstance(item, Record) and str(item.id) in done.ids:
                continue
            if isinstance(item, BadRow) and item.line in done.bad_lines:
                continue
            yield item

    def _take(self, source: Iterator[Record | BadRow], progress: Progress) -> list[Record]:
        """The next chunk: records to retry first, then new ones; bad rows become error rows."""
        chunk: list[Record] = []
        while self._retry and len(chunk) < self.spec.chunk_records:
            chunk.append(self._retry.popleft())
        while not self._exhausted and len(chunk) < self.spec.chunk_records:
            item = next(source, None)
            if item is None:
                self._exhausted = True
            elif isinstance(item, BadRow):
                self._buffer.append(error_row(item.line, item.id, item.reason))
                progress.errors += 1
            else:
                chunk.append(item)
        return chunk

    async def _call(self, chunk: list[Record]) -> tuple[list, list[list]]:
        """The chunk's scheduler calls, one per pool and side by side (a call's jobs share one
        pool: scheduler/actor.py): (the texts' encodings, each record's outcomes: its encoder
        job's first, then one per generative task)."""
        texts, now, n = [r.text for r in chunk], time.time(), len(chunk)
        encs, calls = [None] * n, []
        if self.encoder_tasks:
            encs, jobs = self.edge.encode_jobs(texts, self.encoder_tasks, self.spec.priority, None, now)
            calls.append(self.edge.backend.submit_many(jobs))
        if self.generative:
            calls.append(self.edge.backend.submit_many(
                [generation_job(self.spec, task, text, now) for text in texts for task in self.generative]))
        answers = await asyncio.gather(*calls)
        enc_out = answers[0] if self.encoder_tasks else None
        gen_out, k = (answers[-1] if self.generative else []), len(self.generative)
        per_record = [([enc_out[i]] if enc_out is not None else []) + gen_out[i * k:(i + 1) * k] for i in range(n)]
        return encs, per_record

    def _results(self, record: Record, enc: Any, outcomes: list) -> tuple[dict | None, str | None]:
        """A done record's results by task, or the reason it cannot have any (final)."""
        results: dict = {}
        if self.encoder_tasks:
            _, results = self.edge.results_of(record.text, enc, outcomes[0].result, self.encoder_tasks)
        for task, outcome in zip(self.generative, outcomes[len(outcomes) - len(self.generative):]):
            result, reason = generation_result(outcome.result)
            if reason is not None:
                return None, f"{task}: {reason}"
            results[task] = result
        return results, None

    def _receive(self, chunk: list[Record], encs: list, per_record: list[list], progress: Progress,
                 window: Window) -> Window:
        refused, retry_after, finished = False, 0.0, 0
        for record, enc, outcomes in zip(chunk, encs, per_record):
            status = _worst(outcomes)
            if status is Status.DONE:
                try:
                    results, reason = self._results(record, enc, outcomes)
                    if reason is None:
                        self._buffer.append(result_row(record.line, record.id, results))
                        progress.done += 1
                    else:
                        self._buffer.append(error_row(record.line, record.id, reason))
                        progress.errors += 1
                except Exception as err:  # noqa: BLE001 - one row's failure must not end the job
                    self._buffer.append(error_row(record.line, record.id,
                                                  f"post-processing failed ({type(err).__name__})", final=False))
                    progress.errors += 1
                finished += 1
            elif status is Status.REFUSED:
                retry_after = max([retry_after, *(o.retry_after_s or 0.0 for o in outcomes)])
                refused = True
                self._retry.appendleft(record)
            elif status is Status.EXPIRED:
                progress.expired += 1
                self._retry.append(record)
            else:  # FAILED or CANCELLED
                self._attempts[record.line] += 1
                if self._attempts[record.line] >= MAX_ATTEMPTS:
                    error = next((o.error for o in outcomes if o.status is status and o.error), status.value)
                    reason = f"the model failed it {MAX_ATTEMPTS} times: {error}"
                    self._buffer.append(error_row(record.line, record.id, reason, final=False))
                    progress.errors += 1
                    finished += 1
                else:
                    self._retry.append(record)
        if refused:
            progress.refusals += 1
            return on_refused(window, retry_after, self.clock())
        # ServeBackend answers EXPIRED after resubmitting to a lost scheduler until the deadline:
        # chunk after chunk expiring means the application is gone, not busy.
        self._expired_streak = 0 if finished else self._expired_streak + 1
        if self._expired_streak >= MAX_BACKEND_ERRORS:
            raise BackendGone(f"{self._expired_streak} scheduler calls in a row expired without an answer; is "
                              f"the application running? Resubmit with --resume once it is")
        return on_done(window, finished)

    async def _urgent_misses(self) -> int | None:
        stats = getattr(self.edge.backend, "stats", None)
        if stats is None:
            return None
        try:
            return urgent_misses(await stats(), self.spec.priority)
        except Exception as err:  # noqa: BLE001 - no stats is no signal, not a reason to stop
            log.debug("scheduler stats unavailable: %s", type(err).__name__)
            return None

    def _yield_to(self, misses: int | None, progress: Progress, window: Window) -> Window:
        """A new miss of a more urgent class since the last look: back off (the first look only sets the mark)."""
        if misses is None:
            return window
        previous, self._misses = self._misses, misses
        if previous is None or misses <= previous:
            return window
        progress.yields += 1
        return on_refused(window, YIELD_PAUSE_S, self.clock())

    def _commit_if_full(self, force: bool = False) -> None:
        if self._buffer and (force or len(self._buffer) >= self.spec.part_records):
            self.store.commit(self._buffer)
            self._buffer = []

    def _install_stop_signal(self) -> None:
        """SIGTERM stops the job cleanly; only the main thread may take signals (a driver run
        from a test's worker thread goes without)."""
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.stop)

    async def run(self) -> JobSummary:
        spec = self.spec
        started = self.clock()
        done = self.store.start(self.tasks)
        progress = Progress(count_rows(spec), already=len(done), clock=self.clock)
        window = Window.start(spec.chunk_records, spec.max_inflight_records)
        source = self._pending(done)
        inflight: dict[asyncio.Task, list[Record]] = {}
        backend_errors = 0
        next_print = self.clock()
        next_stats, stats_task = self.clock(), None
        self._install_stop_signal()
        try:
            while not self.stopping:
                now = self.clock()
                sending = sum(len(c) for c in inflight.values())
                while window.may_send(sending, spec.chunk_records, now):
                    chunk = self._take(source, progress)
                    if not chunk:
                        break
                    inflight[asyncio.create_task(self._call(chunk))] = chunk
                    sending += len(chunk)
                if not inflight and self._exhausted and not self._retry:
                    break
                if stats_task is not None and stats_task.done():
                    window = self._yield_to(stats_task.result(), progress, window)
                    stats_task = None
                if stats_task is None and now >= next_stats and spec.yield_to_urgent:
                    stats_task = asyncio.create_task(self._urgent_misses())
                    next_stats = now + STATS_EVERY_S
                if now >= next_print:
                    progress.window = window.limit
                    self.out(progress.line())
                    next_print = now + spec.progress_every_s
                wake = min(next_print, window.paused_until_s if window.paused_until_s > now else next_print)
                # at most STOP_POLL_S: a SIGTERM (Ray gives a few seconds before SIGKILL) is seen at once
                timeout = min(STOP_POLL_S, max(0.01, wake - now))
                if not inflight:
                    await asyncio.sleep(timeout)
                    continue
                finished, _ = await asyncio.wait(inflight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    chunk = inflight.pop(task)
                    try:
                        encs, outcomes = task.result()
                    except Exception as err:  # noqa: BLE001 - the scheduler unreachable past its retries
                        backend_errors += 1
                        log.warning("scheduler call failed (%s); %d record(s) go back to the queue",
                                    type(err).__name__, len(chunk))
                        if backend_errors >= MAX_BACKEND_ERRORS:
                            raise BackendGone(f"{backend_errors} scheduler calls in a row failed (last: "
                                              f"{type(err).__name__}); is the application running? "
                                              f"Resubmit with --resume once it is") from err
                        self._retry.extendleft(reversed(chunk))
                        window = on_refused(window, BACKEND_ERROR_PAUSE_S, self.clock())
                        continue
                    backend_errors = 0
                    window = self._receive(chunk, encs, outcomes, progress, window)
                self._commit_if_full()
        finally:
            for task in [*inflight, *([stats_task] if stats_task else [])]:
                task.cancel()
            self._commit_if_full(force=True)  # what is done stays done, however the loop ended
        progress.window = window.limit
        return self._finish(progress, started)

    def _finish(self, progress: Progress, started: float) -> JobSummary:
        """The last progress line; the output assembled (unless stopped); the summary line."""
        self.out(progress.line())
        stopped = self.stopping
        if stopped:
            results, errors = progress.already + progress.done, progress.errors  # committed so far
        else:
            results, errors = self.store.assemble()
        summary = JobSummary(progress.total, results, errors, progress.already, self.clock() - started,
                             progress.refusals, progress.yields, progress.expired, stopped, self.spec.output,
                             self.spec.errors_output)
        self.out(summary.line())
        return summary
