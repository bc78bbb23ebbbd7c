"""The ordering gate (shared/ordering.py): a case's events in sequence order, whatever
the delivery order."""

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.ordering import Position, arrive, stop_before


def _deliver(sequences, position=None):
    """Deliver items named after their sequences; returns (position, applied in order)."""
    position, applied = position or Position(), []
    for sequence in sequences:
        position, ready = arrive(position, sequence, f"e{sequence}")
        applied += ready
    return position, applied


def test_the_next_event_is_applied_at_once():
    position, ready = arrive(Position(), 1, "e1")
    assert ready == ["e1"] and position == Position(1, {})


def test_an_early_event_is_held_until_its_predecessors_come():
    position, applied = _deliver([3, 2])
    assert applied == [] and position.applied == 0 and set(position.held) == {2, 3}
    position, ready = arrive(position, 1, "e1")
    assert ready == ["e1", "e2", "e3"] and position == Position(3, {})


def test_a_gap_stops_the_release():
    position, applied = _deliver([1, 3, 5, 2])
    assert applied == ["e1", "e2", "e3"] and position == Position(3, {5: "e5"})


def test_an_event_at_or_below_the_position_or_held_already_is_a_duplicate():
    position, _ = _deliver([1, 2, 4])
    for sequence in (1, 2, 4):
        assert arrive(position, sequence, "again") == (position, [])


def test_an_event_without_a_sequence_is_applied_as_it_comes_and_counts():
    position, applied = _deliver([None, None])
    assert applied == ["eNone", "eNone"] and position.applied == 2
    # Later events of the same case, numbered after those two, follow on.
    position, ready = arrive(position, 3, "e3")
    assert ready == ["e3"] and position.applied == 3


def test_a_failed_event_leaves_the_case_waiting_before_it():
    position, ready = _deliver([2, 3, 4, 1])
    assert ready == ["e1", "e2", "e3", "e4"] and position.applied == 4
    # e2 could not be applied: the case waits at 1, e3 and e4 are held again.
    waiting = stop_before(position, 2, ready[2:])
    assert waiting == Position(1, {3: "e3", 4: "e4"})
    # e2 published again (from the dead letters): it and the held ones go through.
    assert arrive(waiting, 2, "e2") == (Position(4, {}), ["e2", "e3", "e4"])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.permutations(list(range(1, n + 1))), st.lists(st.integers(1, n), max_size=6), st.randoms(),
)))
def test_any_delivery_order_with_duplicates_applies_each_once_in_sequence(case):
    order, repeats, rand = case
    deliveries = list(order) + repeats
    rand.shuffle(deliveries)
    position, applied = _deliver(deliveries)
    n = len(order)
    assert applied == [f"e{s}" for s in range(1, n + 1)]
    assert position == Position(n, {})


def test_an_event_without_a_sequence_lets_through_what_follows_it():
    position, ready = arrive(Position(2, {4: "e4"}), None, "old")
    assert ready == ["old", "e4"] and position == Position(4, {})
