"""Decide, then record: the pure half of every consumer (issue 14; docs/architecture.md).

A consumer is a `Decider`: given the state it keeps for one case and one event of that
case, it returns a `Decision` — the case's state after the event and the events it
emits. It reads no database, clock or settings: what it needs arrives in the `Context`
(the database's time of the transaction, how the event came) or in the state.

The shell (shared/process.py) loads the states of a batch's cases in one query, folds
the batch through the decider with `fold`, saves the states that changed and appends the
emitted events to the store, in the transaction that marks the batch processed. The
reporting rebuild folds the same deciders in memory. One fold per fact.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

State = TypeVar("State")
Event = Any  # a shared.events.Envelope (typed loosely: this module imports no pydantic model)


@dataclass(frozen=True)
class Context:
    """What a decision may depend on besides the state and the event."""

    now: dt.datetime  # the database's time of the transaction (when the effects are recorded)
    imported: bool = False  # the event came in imported history (`ce_sirimported`)


@dataclass(frozen=True)
class Decision(Generic[State]):
    state: State  # the case's state after the event (the same object: nothing changed)
    emit: tuple[Event, ...] = ()  # new events, in order; recorded with the imported mark of the cause


Decide = Callable[[State, Event, Context], Decision[State]]


@dataclass(frozen=True)
class Addressed:
    """An emitted event bound for a topic other than its type's own (routing's outbound
    deliveries). Here, so that a pure decider can emit one; shared/process.py records it."""

    event: Event
    topic: str


@dataclass
class Folded(Generic[State]):
    """A batch folded: the states after it (of every case touched), the cases whose state
    changed, and the emitted events with the context each was decided in."""

    states: dict[uuid.UUID, State]
    changed: set[uuid.UUID] = field(default_factory=set)
    emitted: list[tuple[Event, Context]] = field(default_factory=list)


def fold(
    decide: Decide[State],
    states: Mapping[uuid.UUID, State],
    events: Iterable[tuple[Event, Context]],
) -> Folded[State]:
    """Apply each event, in the order given, to its case's state (`states` must hold every
    case the events name; the loader gives an empty state to a case it has never seen).
    A decider signals "nothing changed" by returning the state it was given."""
    result = Folded(dict(states))
    for event, context in events:
        before = result.states[event.case_id]
        decision = decide(before, event, context)
        if decision.state is not before:
            result.states[event.case_id] = decision.state
            result.changed.add(event.case_id)
        result.emitted += [(emitted, context) for emitted in decision.emit]
    return result
