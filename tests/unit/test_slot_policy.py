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
