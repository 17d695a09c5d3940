"""mtl.slot_policy: who joins the decode batch and who is paused for whom (pure)."""
import pytest

from mtl.slot_policy import SlotView, plan_slots


def seqs(*specs):
    """(key, rank, order) triples -> SlotViews."""
    return [SlotView(k, r, o) for k, r, o in specs]


def test_free_slots_fill_most_urgent_first_then_by_arrival():
    waiting = seqs((1, 2, 1), (2, 0, 3), (3, 2, 2), (4, 1, 4))
    plan = plan_slots([], waiting, slots=3)
    assert plan.join == (2, 4, 1) and plan.pause == ()


def test_a_full_batch_takes_nobody_of_the_same_class():
    running = seqs((1, 2, 1), (2, 2, 2))
    plan = plan_slots(running, seqs((3, 2, 3)), slots=2)
    assert plan == plan_slots(running, seqs((3, 2, 3)), slots=2, preempt=False)
    assert plan.join == () and plan.pause == ()


def test_an_urgent_arrival_pauses_the_latest_lowest_class_sequence():
    running = seqs((1, 2, 1), (2, 1, 2), (3, 2, 3))
    plan = plan_slots(running, seqs((9, 0, 9)), slots=3)
    assert plan.pause == (3,) and plan.join == (9,)


def test_preemption_stops_where_the_waiting_no_longer_outrank_the_running():
    running = seqs((1, 2, 1), (2, 1, 2))
    waiting = seqs((7, 0, 7), (8, 1, 8), (9, 2, 9))
    plan = plan_slots(running, waiting, slots=2)
    # 7 (rank 0) pauses 1 (rank 2); 8 (rank 1) does not outrank 2 (rank 1): it waits
    assert plan.pause == (1,) and plan.join == (7,)


def test_without_preemption_urgent_work_only_takes_free_slots():
    running = seqs((1, 2, 1), (2, 2, 2))
    plan = plan_slots(running, seqs((9, 0, 9)), slots=2, preempt=False)
    assert plan.pause == () and plan.join == ()
    plan = plan_slots(running[:1], seqs((9, 0, 9), (8, 2, 8)), slots=2, preempt=False)
    assert plan.join == (9,)


def test_a_paused_sequence_resumes_before_later_work_of_its_class():
    waiting = seqs((1, 2, 1), (5, 2, 5))  # 1 was paused earlier; 5 arrived after it
    assert plan_slots([], waiting, slots=1).join == (1,)


def test_slots_must_be_positive():
    with pytest.raises(ValueError, match="slots"):
        plan_slots([], [], slots=0)


def test_a_prefill_budget_spreads_a_burst_over_steps_but_always_takes_one():
    burst = [SlotView(k, 2, k, tokens=200) for k in range(1, 6)]
    assert plan_slots([], burst, slots=8, prefill_budget=500).join == (1, 2)
    assert plan_slots([], [SlotView(1, 2, 1, tokens=900)], slots=8, prefill_budget=500).join == (1,)
    assert plan_slots([], burst, slots=8).join == (1, 2, 3, 4, 5)


def test_an_urgent_arrival_goes_first_within_the_budget():
    waiting = [SlotView(1, 2, 1, tokens=400), SlotView(2, 0, 2, tokens=300)]
    assert plan_slots([], waiting, slots=4, prefill_budget=500).join == (2,)
    running = [SlotView(7, 2, 7), SlotView(8, 2, 8)]
    plan = plan_slots(running, [SlotView(9, 0, 9, tokens=300)], slots=2, prefill_budget=100)
    assert plan.pause == (8,) and plan.join == (9,)  # preempting: the first joiner always goes
