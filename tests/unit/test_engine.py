"""mtl.engine.ContinuousEngine with a fake model and a fake clock: join, leave, preempt, cancel.

The fake batch predicts "the last token + 1" for every row and advances the clock by a fixed time
per forward pass, so each test can say exactly which tokens a sequence gets and when.
"""
import pytest
import torch

from mtl.engine import ContinuousEngine
from mtl.generate import Completion, GenerationRequest, PromptTooLongError

VOCAB = 100
EOS = 99
PREFILL_S, STEP_S = 0.05, 0.02


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeGenerator:
    """The Generator surface the engine uses: token ids are the numbers in the text."""

    eos_token_ids = frozenset({EOS})
    pad_token_id = 0
    max_context_tokens = 64
    model = None
    device = torch.device("cpu")
    num_threads = 1

    def _encode(self, text):
        return [int(t) for t in text.split()]

    def _decode_text(self, tokens):
        return "".join(f" {t}" for t in tokens if t != EOS)


class FakeBatch:
    """Rows of token lists; every forward pass predicts last + 1 and costs clock time."""

    def __init__(self, clock):
        self.clock = clock
        self.contexts: list[list[int]] = []
        self.fail_next = False
        self.during_join = None  # called inside the next join: what arrives while a prefill runs

    @property
    def rows(self):
        return len(self.contexts)

    def _logits(self, lasts):
        out = torch.zeros((len(lasts), VOCAB))
        for i, last in enumerate(lasts):
            out[i, (last + 1) % VOCAB] = 1.0
        return out

    def join(self, contexts):
        self.clock.t += PREFILL_S
        hook, self.during_join = self.during_join, None
        if hook is not None:
            hook()
        self.contexts += [list(c) for c in contexts]
        return self._logits([c[-1] for c in contexts])

    def step(self, tokens):
        self.clock.t += STEP_S
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model broke")
        for row, token in zip(self.contexts, tokens):
            row.append(token)
        return self._logits(tokens)

    def leave(self, rows):
        gone = set(rows)
        self.contexts = [c for i, c in enumerate(self.contexts) if i not in gone]


class Events:
    def __init__(self):
        self.items = []

    def __call__(self, item):
        self.items.append(item)

    @property
    def text(self):
        return "".join(i for i in self.items if isinstance(i, str))

    @property
    def completion(self):
        done = [i for i in self.items if isinstance(i, Completion)]
        return done[0] if done else None


@pytest.fixture()
def clock():
    return Clock()


def engine(clock, slots=2, preempt=True):
    return ContinuousEngine(FakeGenerator(), slots=slots, preempt=preempt, clock=clock, batch=FakeBatch(clock))


def submit(eng, prompt, n, rank=2):
    events = Events()
    eng.submit(GenerationRequest(prompt, max_new_tokens=n), events, rank=rank)
    return events


def test_a_sequence_joins_between_steps_without_waiting_for_the_batch(clock):
    eng = engine(clock)
    a = submit(eng, "10", 6)
    eng.step()  # a: prefill (11) + step (12)
    eng.step()  # 13
    b = submit(eng, "50", 3)
    eng.step()  # b joins: 51 (prefill), then both step: a 14, b 52
    assert a.text == " 11 12 13 14" and b.text == " 51 52"
    assert eng.batch.rows == 2
    eng.step()  # a 15, b 53: b is done and leaves
    assert b.completion == Completion(" 51 52 53", 1, 3, "length")
    assert eng.batch.rows == 1 and [s.key for s in eng.running] == [1]
    eng.step()
    assert a.completion.text == " 11 12 13 14 15 16" and eng.batch.rows == 0 and not eng.running


def test_eos_ends_a_sequence_with_stop(clock):
    eng = engine(clock)
    a = submit(eng, "96", 10)
    for _ in range(3):
        eng.step()
    assert a.completion == Completion(" 97 98", 1, 3, "stop")


def test_an_interactive_arrival_pauses_batch_work_and_gets_its_first_token_in_one_iteration(clock):
    eng = engine(clock, slots=2)
    b1, b2 = submit(eng, "10", 8), submit(eng, "40", 8)
    eng.step()
    eng.step()
    arrived = clock()
    urgent = submit(eng, "70", 3, rank=0)
    eng.step()
    # b2 (the later batch sequence) made room; the interactive one has its first token after one
    # prefill, not after the batch ends
    assert [s.key for s in eng.running] == [1, 3] and 2 in eng.waiting
    assert urgent.text.startswith(" 71")
    assert eng.stats.ttft_s[-1] == pytest.approx(PREFILL_S, abs=1e-9)
    assert clock() - arrived == pytest.approx(PREFILL_S + STEP_S)
    eng.step()  # urgent done (73) and leaves; b2 resumes next
    assert urgent.completion.text == " 71 72 73"
    for _ in range(10):
        eng.step()
    # the paused sequence resumes from where it stopped: same tokens as without the pause
    assert b2.completion.text == "".join(f" {t}" for t in range(41, 49))
    assert b1.completion.text == "".join(f" {t}" for t in range(11, 19))
    assert eng.stats.paused == 1 and eng.stats.joined == 4


def test_an_interactive_arrival_during_a_batch_prefill_joins_before_the_decode_step(clock):
    # A batch-class prefill (a refill or a resume, often 50-100 tokens) is the longest forward pass
    # an arrival can land in. The urgent sequence must not wait for that prefill AND the decode step
    # after it: it joins in the same iteration, once the prefill ends.
    eng = engine(clock, slots=2)
    submit(eng, "10", 8)
    eng.step()
    late = submit(eng, "40", 8)
    holder = {}
    arrived = {}

    def arrive():
        arrived["t"] = clock()
        holder["urgent"] = submit(eng, "70", 3, rank=0)

    eng.batch.during_join = arrive
    eng.step()  # late's prefill; urgent arrives during it
    urgent = holder["urgent"]
    assert urgent.text.startswith(" 71")  # its first token in this very iteration
    assert eng.stats.ttft_s[-1] == pytest.approx(PREFILL_S, abs=1e-9)  # the rest of late's prefill: 0 here
    assert [s.key for s in eng.running] == [1, 3] and 2 in eng.waiting  # late made room
    assert late.completion is None


def test_a_batch_arrival_during_a_prefill_does_not_take_a_second_prefill_in_the_same_iteration(clock):
    # The extra round is for urgent work only: equal-class arrivals wait for the next iteration,
    # so batch refills never stack prefills back to back ahead of the running rows' decode step.
    eng = engine(clock, slots=3)
    submit(eng, "10", 8)
    eng.step()
    submit(eng, "40", 8)
    holder = {}
    eng.batch.during_join = lambda: holder.setdefault("b", submit(eng, "60", 3))
    eng.step()
    assert holder["b"].text == "" and eng.stats.prefills == 2
    eng.step()
    assert holder["b"].text.startswith(" 61")


def test_without_preemption_urgent_work_waits_for_a_free_slot(clock):
    eng = engine(clock, slots=1, preempt=False)
    batch = submit(eng, "10", 4)
    eng.step()
    urgent = submit(eng, "70", 1, rank=0)
    eng.step()
    assert urgent.text == "" and batch.completion is None
    eng.step()
    eng.step()
    assert batch.completion is not None and urgent.completion.text == " 71"


def test_a_cancelled_sequence_frees_its_slot_at_the_next_step(clock):
    eng = engine(clock, slots=1)
    gone = submit(eng, "10", 20)
    eng.step()
    waiting = submit(eng, "30", 5)
    eng.step()
    assert waiting.text == ""  # the only slot is taken
    before = len(gone.items)
    eng.cancel(1)
    eng.step()  # gone leaves, waiting joins, in this one iteration
    assert len(gone.items) == before and gone.completion is None
    assert waiting.text.startswith(" 31") and [s.key for s in eng.running] == [2]
    assert eng.stats.cancelled == 1


def test_a_cancelled_waiting_sequence_never_runs(clock):
    eng = engine(clock, slots=1)
    submit(eng, "10", 5)
    never = submit(eng, "30", 5)
    eng.cancel(2)
    for _ in range(6):
        eng.step()
    assert never.items == [] and eng.load() == 0


def test_a_model_failure_ends_the_running_sequences_with_it_and_the_engine_goes_on(clock):
    eng = engine(clock)
    a = submit(eng, "10", 5)
    eng.step()
    eng.batch.fail_next = True
    eng.step()
    assert isinstance(a.items[-1], RuntimeError) and eng.stats.failed == 1 and not eng.running
    b = submit(eng, "20", 2)
    eng.step()
    assert b.completion.text == " 21 22"


def test_a_prompt_too_long_is_refused_before_it_is_queued(clock):
    eng = engine(clock)
    with pytest.raises(PromptTooLongError, match="context of 64"):
        eng.submit(GenerationRequest(" ".join(["1"] * 60), max_new_tokens=10), Events())
    assert eng.load() == 0
