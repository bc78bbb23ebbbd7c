"""The shell's pure half (shared/decider.py): folding a batch through a decider."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from shared.decider import Context, Decision, fold

NOW = dt.datetime(2026, 11, 30, 9, tzinfo=dt.timezone.utc)
CASES = [uuid.UUID(int=n) for n in range(1, 4)]


@dataclass(frozen=True)
class Event:
    case_id: uuid.UUID
    value: int


def count_odd(state: tuple[int, ...], event: Event, context: Context) -> Decision[tuple[int, ...]]:
    """Keeps the odd values it sees and emits one event per odd value; even values change nothing."""
    if event.value % 2 == 0:
        return Decision(state)
    return Decision(state + (event.value,), emit=(("seen", event.value, context.imported),))


def test_an_unchanged_state_is_not_marked_changed() -> None:
    folded = fold(count_odd, {CASES[0]: ()}, [(Event(CASES[0], 2), Context(NOW))])
    assert folded.changed == set() and folded.emitted == [] and folded.states == {CASES[0]: ()}


def test_emitted_events_keep_their_order_and_the_context_they_were_decided_in() -> None:
    events = [(Event(CASES[0], 1), Context(NOW)), (Event(CASES[1], 3), Context(NOW, imported=True))]
    folded = fold(count_odd, dict.fromkeys(CASES[:2], ()), events)
    assert [(out, context.imported) for out, context in folded.emitted] == [
        (("seen", 1, False), False), (("seen", 3, True), True),
    ]
    assert folded.changed == set(CASES[:2])


def test_the_states_given_are_not_changed_in_place() -> None:
    given_states = {CASES[0]: ()}
    fold(count_odd, given_states, [(Event(CASES[0], 1), Context(NOW))])
    assert given_states == {CASES[0]: ()}


@given(st.lists(st.tuples(st.sampled_from(CASES), st.integers(0, 50)), max_size=40), st.integers(0, 40))
def test_a_batch_folded_at_once_equals_the_same_events_folded_in_two_batches(pairs, cut) -> None:
    """The shell folds whatever batch the consumer hands it: where the batch is cut
    cannot change the states or what is emitted."""
    events = [(Event(case, value), Context(NOW)) for case, value in pairs]
    start = dict.fromkeys(CASES, ())
    whole = fold(count_odd, start, events)
    first = fold(count_odd, start, events[:cut])
    second = fold(count_odd, first.states, events[cut:])
    assert whole.states == second.states
    assert whole.emitted == first.emitted + second.emitted
    assert whole.changed == first.changed | second.changed
