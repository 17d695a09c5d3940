"""Faults inside a batch (issue 10, findings 9 and 11): a row that makes a live replica fail costs
only its own request (the batch is split, not retried whole), and a request co-batched with longer
work on a hung replica ends at its own deadline, not the batch's."""
import asyncio
import time

from scheduler.actor import SchedulerActor
from scheduler.pools import LocalPool
from scheduler.request import Status
from tests.unit.test_scheduler_actor import config, job, run


class PoisonAware:
    """A live replica that raises for any batch containing the payload 'poison' (a row that passes
    validation and still breaks the model call), like a static decode batch would."""

    def __init__(self):
        self.batches = []

    async def run_batch(self, payloads):
        self.batches.append(list(payloads))
        await asyncio.sleep(0.005)
        if "poison" in payloads:
            raise ValueError("probability tensor contains inf or nan")
        return [("ok", p) for p in payloads]


def test_a_poison_row_fails_only_its_own_request():
    async def main():
        rep = PoisonAware()
        s = SchedulerActor(config(), {"encoder": LocalPool([rep])})
        payloads = ["a", "b", "poison", "c"]
        outs = await asyncio.gather(*(s.submit(job(p, priority="batch")) for p in payloads))
        return outs, rep, s

    outs, rep, s = run(main())
    by_payload = dict(zip(["a", "b", "poison", "c"], outs))
    assert by_payload["poison"].status is Status.FAILED
    assert "inf or nan" in by_payload["poison"].error
    assert [by_payload[p].status for p in "abc"] == [Status.DONE] * 3
    assert [by_payload[p].result for p in "abc"] == [("ok", p) for p in "abc"]
    # the poison row ran in at most log2(4) + 1 = 3 batches; nothing was re-run whole
    assert sum("poison" in b for b in rep.batches) <= 3
    assert sum(len(b) for b in rep.batches) <= 4 + 4 + 2
    assert s.stats()["counts"] == {"done": 3, "failed": 1}


class HangsOnLongWork:
    """Hangs whenever the batch holds the payload 'long' (a wedged model call)."""

    async def run_batch(self, payloads):
        if "long" in payloads:
            await asyncio.sleep(3600)
        await asyncio.sleep(0.005)
        return [("ok", p) for p in payloads]


def test_a_request_on_a_hung_batch_ends_at_its_own_deadline():
    async def main():
        s = SchedulerActor(config(), {"encoder": LocalPool([HangsOnLongWork()])})
        started = time.monotonic()
        long = asyncio.ensure_future(s.submit(job("long", priority="batch", deadline_ms=60_000)))
        short = asyncio.ensure_future(s.submit(job("short", priority="batch", deadline_ms=200)))
        out = await short
        waited = time.monotonic() - started
        long.cancel()
        return out, waited

    out, waited = run(main())
    # co-batched with the 60 s job on a hung replica: answered at its own deadline (+ the grace of
    # a batch timeout, at least 1 s), not after the longest member's
    assert out.status is Status.EXPIRED and "while its batch ran" in out.error
    assert waited < 5.0
