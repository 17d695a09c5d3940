"""The front door's admission rule (scheduler/front_door.py): pure, fake clock."""
from scheduler.front_door import EdgeLimits, EdgeView, edge_decision, refusing_until

LIMITS = EdgeLimits(max_inflight=100, share=(1.0, 0.5, 0.25), max_lag_s=0.05, max_hold_s=2.0)


def test_lower_classes_are_refused_first_as_the_edge_fills():
    def admitted(inflight):
        return [edge_decision(r, EdgeView(0.0, inflight), LIMITS).admit for r in range(3)]

    assert admitted(10) == [True, True, True]
    assert admitted(30) == [True, True, False]  # batch may fill a quarter of the window
    assert admitted(60) == [True, False, False]
    assert admitted(99) == [True, False, False]
    assert admitted(100) == [False, False, False]  # even interactive: the replica is full


def test_a_late_event_loop_refuses_every_class_but_the_top_one():
    view = EdgeView(0.0, 5, loop_lag_s=0.2)
    assert edge_decision(0, view, LIMITS).admit
    d = edge_decision(2, view, LIMITS)
    assert not d.admit and "200 ms late" in d.reason


def test_a_very_late_event_loop_sheds_the_top_class_too_without_holding_it():
    """At 4x overload on 2 cores more interactive work arrived than the machine serves; letting all
    of it in put the loops seconds behind and 0.1 % of it met its 1 s deadline."""
    d = edge_decision(0, EdgeView(0.0, 5, loop_lag_s=0.3), LIMITS)
    assert not d.admit and "300 ms late" in d.reason and d.hold_s == 0.0 and d.retry_after_s >= 1.0
    assert edge_decision(0, EdgeView(0.0, 5, loop_lag_s=0.24), LIMITS).admit


def test_refusals_of_lower_classes_are_held_and_interactive_ones_are_not():
    d = edge_decision(2, EdgeView(0.0, 50), LIMITS)
    assert not d.admit and d.hold_s > 0 and d.retry_after_s >= 1.0
    d = edge_decision(0, EdgeView(0.0, 100), LIMITS)
    assert not d.admit and d.hold_s == 0.0


def test_scheduler_refusals_are_answered_at_the_edge_until_retry_after():
    until = refusing_until((), 1, 3.0, now=10.0, nranks=3)
    assert until == (0.0, 13.0, 13.0)  # standard and every lower class
    assert not edge_decision(1, EdgeView(12.0, 0, refusing_until=until), LIMITS).admit
    assert not edge_decision(2, EdgeView(12.0, 0, refusing_until=until), LIMITS).admit
    assert edge_decision(0, EdgeView(12.0, 0, refusing_until=until), LIMITS).admit
    assert edge_decision(1, EdgeView(13.5, 0, refusing_until=until), LIMITS).admit
    # the top class is always asked, and a long Retry-After is capped
    assert refusing_until(until, 0, 9.0, now=10.0, nranks=3) == until
    assert refusing_until((), 2, 60.0, now=0.0, nranks=3) == (0.0, 0.0, 5.0)


def test_edge_reports_add_up_per_gateway_and_count_late_answers_as_misses():
    import asyncio

    from scheduler.actor import SchedulerActor
    from scheduler.front_door import EdgeReport

    s = SchedulerActor()
    s.edge_report(EdgeReport("g1", {("interactive", "met"): 8, ("interactive", "late"): 1}))
    s.edge_report(EdgeReport("g2", {("interactive", "refused"): 1, ("batch", "met"): 5}))
    # a later cumulative report replaces the earlier one of the same gateway
    s.edge_report(EdgeReport("g1", {("interactive", "met"): 9, ("interactive", "late"): 1}))
    edge = asyncio.run(asyncio.sleep(0, s.stats()))["edge"]
    assert edge["interactive"]["met"] == 9 and edge["interactive"]["late"] == 1
    assert edge["interactive"]["attainment"] == 9 / 11
    assert edge["batch"]["attainment"] == 1.0
