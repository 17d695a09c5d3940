"""`ContinuousEngine`: iteration-level (continuous) batching of a causal LM, with priority preemption.

Design note (the engine loop, `step`). One thread owns the model. Each iteration:
  1. take what arrived and what was cancelled since the last iteration: a cancelled sequence leaves
     the batch here, so a client that disconnects frees its slot within one decode step;
  2. ask the pure policy (`mtl.slot_policy.plan_slots`) which waiting sequences join and which
     running ones are paused for them (a higher class outranking the lowest running one);
  3. pause: the paused rows leave the KV batch (their tokens are kept, their cache recomputed when
     they come back); join: the joiners are prefilled as one small batch, each takes its first token
     (its time to first token), and their cache is stacked onto the running batch; an arrival
     during that prefill that outranks a running row goes through 2-3 again at once (see `step`);
  4. one decode step over every row; rows that finished (EOS, a stop string, their own limit) leave.
So a new stream waits for one step and one prefill, never for a whole batch to finish, and
interactive work is never stuck behind a full batch of bulk work. `mtl.kv_batch.KVBatch` does the
cache arithmetic; the text, stop-string and streaming rules are the static path's own
(`mtl.generate.DecodeRow`), so both paths give the same text for the same greedy request.

Events go out through each sequence's `emit` callback, called on the engine thread: str text
deltas, then one `Completion`, or one exception if the model failed under it. Callers on an event
loop hand them over with `loop.call_soon_threadsafe`.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mtl.decoding import choose_next_tokens
from mtl.generate import DecodeRow, GenerationRequest, PromptTooLongError, _torch_generator
from mtl.kv_batch import KVBatch
from mtl.slot_policy import SlotView, plan_slots

log = logging.getLogger(__name__)
Emit = Callable[[Any], None]


@dataclass(eq=False)
class _Sequence:
    key: int
    rank: int
    order: int
    prompt_ids: list[int]
    row: DecodeRow
    emit: Emit
    generator: torch.Generator | None
    submitted_at: float
    first_token_at: float | None = None
    pauses: int = 0
    ended: bool = False

    def view(self) -> SlotView:
        return SlotView(self.key, self.rank, self.order, len(self.prompt_ids) + len(self.row.tokens))

    def context(self) -> list[int]:
        """What a (re)join prefills: the prompt and every token produced so far."""
        return self.prompt_ids + self.row.tokens


@dataclass
class EngineStats:
    steps: int = 0
    prefills: int = 0
    joined: int = 0
    paused: int = 0
    cancelled: int = 0
    finished: int = 0
    failed: int = 0
    max_rows: int = 0
    busy_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)  # the last 1,000 times to first token

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "ttft_s"}
        out["busy_s"] = round(self.busy_s, 3)
        return out


class ContinuousEngine:
    """Continuous batching over a `mtl.generate.Generator` (its model, tokenizer and text rules)."""

    def __init__(self, generator: Any, *, slots: int = 8, preempt: bool = True, prefill_budget: int | None = 512,
                 urgent_round: bool = True, clock: Callable[[], float] = time.monotonic, batch: Any = None,
                 thread_setup: Callable[[], None] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.generator = generator
        self.slots = slots
        self.preempt = preempt
        self.prefill_budget = prefill_budget  # prompt tokens prefilled per step at most (slot_policy rule 4)
        self.urgent_round = urgent_round  # off only to measure what it buys (bench.continuous_bench)
        self.clock = clock
        self.batch = batch if batch is not None else KVBatch(
            generator.model, pad_token_id=generator.pad_token_id, device=generator.device)
        self.stats = EngineStats()
        self.running: list[_Sequence] = []  # in the order of the batch's rows
        self.waiting: dict[int, _Sequence] = {}
        self.step_started_at: float | None = None  # a forward pass is running since (stall check)
        self._keys = itertools.count(1)
        self._cond = threading.Condition()
        self._inbox: list[_Sequence] = []
        self._cancels: set[int] = set()
        self._thread: threading.Thread | None = None
        self._thread_setup = thread_setup
        self._stopped = False

    # ------------------------------------------------------------------ callers (any thread)
    def submit(self, request: GenerationRequest, emit: Emit, *, rank: int = 0) -> int:
        """Queue one sequence; returns its key (for `cancel`). Raises ValueError/PromptTooLongError
        for a prompt that cannot run, before anything is queued."""
        ids = self.generator._encode(request.prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) + request.max_new_tokens > self.generator.max_context_tokens:
            raise PromptTooLongError(
                f"the prompt has {len(ids)} tokens; with max_new_tokens={request.max_new_tokens} that exceeds "
                f"the model's context of {self.generator.max_context_tokens} tokens")
        key = next(self._keys)
        seq = _Sequence(key, int(rank), key, ids, DecodeRow(self.generator, request, len(ids)), emit,
                        _torch_generator(request.seed) if request.temperature > 0 else None, self.clock())
        with self._cond:
            self._inbox.append(seq)
            self._cond.notify()
        return key

    def cancel(self, key: int) -> None:
        """Drop a sequence (its consumer went away); it emits nothing more."""
        with self._cond:
            self._cancels.add(key)
            self._cond.notify()

    def start(self) -> None:
        """Run the loop in a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="decode-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """End the loop (after the step in progress) and wait for the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def load(self) -> int:
        """Sequences held (running + waiting + not yet taken)."""
        return len(self.running) + len(self.waiting) + len(self._inbox)

    # ------------------------------------------------------------------ the engine thread
    def _run(self) -> None:
        if getattr(self.generator, "device", torch.device("cpu")).type == "cpu":
            torch.set_num_threads(getattr(self.generator, "num_threads", 1))  # see mtl.generate.cpu_threads
        if self._thread_setup is not None:
            self._thread_setup()
        while True:
            with self._cond:
                while not (self._stopped or self._inbox or self._cancels or self.running or self.waiting):
                    self._cond.wait()
                if self._stopped:
                    return
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a bug here must not strand every caller
                log.exception("decode engine step failed")
                self._fail_all(RuntimeError("the decode engine failed; retry"))

    def step(self) -> None:
        """One iteration of the loop (see the module's design note); public for tests."""
        self._take_arrivals()
        self._admit(list(self.waiting.values()))
        # A second round, for urgent work that arrived during those joins' prefill: a batch-class
        # prefill (a refill, or a paused row's recompute of 50-100 tokens) is the longest pass an
        # arrival can land in, and it should not wait for the decode step after it too. Only
        # arrivals that outrank a running row take it; the others wait for the next iteration, so
        # bulk prefills never run back to back ahead of the running rows' decode step.
        lowest = max((s.rank for s in self.running), default=None)
        urgent = [s for s in self._take_arrivals() if lowest is not None and s.rank < lowest] if self.urgent_round else []
        if urgent:
            self._admit(urgent)
        if self.running:
            self._forward(self.running, lambda: self.batch.step([s.row.tokens[-1] for s in self.running]))
            self.stats.steps += 1

    def _admit(self, candidates: list[_Sequence]) -> None:
        """Pause and join as `plan_slots` says, choosing joiners among `candidates` (waiting ones)."""
        plan = plan_slots([s.view() for s in self.running], [s.view() for s in candidates],
                          self.slots, preempt=self.preempt, prefill_budget=self.prefill_budget)
        if plan.pause:
            self._pause(set(plan.pause))
        if plan.join:
            self._join([self.waiting.pop(k) for k in plan.join])

    def _take_arrivals(self) -> list[_Sequence]:
        """Move new sequences to `waiting` and carry out cancels; returns the new ones still waiting."""
        with self._cond:
            arrivals, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, set()
        for seq in arrivals:
            self.waiting[seq.key] = seq
        if not cancels:
            return arrivals
        for key in cancels & set(self.waiting):
            self.waiting.pop(key).ended = True
            self.stats.cancelled += 1
        gone = [i for i, s in enumerate(self.running) if s.key in cancels]
        for i in gone:
            self.running[i].ended = True
        self.stats.cancelled += len(gone)
        self._drop_rows(gone)
        return [seq for seq in arrivals if not seq.ended]

    def _pause(self, keys: set[int]) -> None:
        rows = [i for i, s in enumerate(self.running) if s.key in keys]
        for i in rows:
            seq = self.running[i]
            seq.pauses += 1
            self.waiting[seq.key] = seq
        self.stats.paused += len(rows)
        self._drop_rows(rows)

    def _join(self, joiners: list[_Sequence]) -> None:
        self.running.extend(joiners)
        self.stats.prefills += 1
        self.stats.joined += len(joiners)
        self._forward(joiners, lambda: self.batch.join([s.context() for s in joiners]))

    def _forward(self, seqs: list[_Sequence], run: Callable[[], torch.Tensor]) -> None:
        """One forward pass for `seqs` (rows of the batch): a token each, events out, done rows out."""
        self.step_started_at = started = self.clock()
        try:
            logits = run()
        except Exception as err:  # noqa: BLE001 - the model failed under these rows: they end with it
            log.warning("decode step failed for %d sequence(s): %r", len(seqs), err)
            self._fail_all(err)
            return
        finally:
            self.stats.busy_s += self.clock() - started
            self.step_started_at = None
        tokens = choose_next_tokens(logits, [s.row.request.temperature for s in seqs],
                                    [s.row.request.top_p for s in seqs], [s.generator for s in seqs])
        now = self.clock()
        for seq, token in zip(seqs, tokens.tolist()):
            seq.row.push(token)
            if seq.first_token_at is None:
                seq.first_token_at = now
                self.stats.ttft_s = self.stats.ttft_s[-999:] + [now - seq.submitted_at]
            delta = seq.row.take_delta()
            if delta:
                seq.emit(delta)
        self.stats.max_rows = max(self.stats.max_rows, len(self.running))
        done = [i for i, s in enumerate(self.running) if s.row.finished]
        for i in done:
            seq = self.running[i]
            seq.ended = True
            self.stats.finished += 1
            seq.emit(seq.row.completion())
        self._drop_rows(done)

    def _drop_rows(self, rows: list[int]) -> None:
        if not rows:
            return
        self.batch.leave(rows)
        gone = set(rows)
        self.running = [s for i, s in enumerate(self.running) if i not in gone]

    def _fail_all(self, err: BaseException) -> None:
        """The batch is lost: every running sequence ends with `err`; waiting ones stay queued."""
        for seq in self.running:
            if not seq.ended:
                seq.ended = True
                self.stats.failed += 1
                seq.emit(err)
        self.running = []
        self.batch.leave(list(range(self.batch.rows)))
