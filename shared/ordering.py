"""A case's events in their sequence order, whatever order they are delivered in.

Intake numbers each case's events 1, 2, 3 … (the envelope's `sequence`, SPEC §3). A
consumer keeps, per case, a `Position`: the highest sequence it has applied and the
events that came early (held until their predecessors arrive). `arrive` says what one
delivered event makes ready to apply, in order:

- the next sequence: it, and then every held event that now follows without a gap;
- a later one: nothing yet (it is held);
- one at or below the position, or already held: nothing (a duplicate);
- an event without a sequence (recorded before sequences existed): itself, at once, and
  it counts as the case's next event, as the topic's order was the only order then.

Pure: the live consumers (shared/consumer.py) keep positions in a table, the rebuild
(services/reporting/commands.py) in memory; both fold through this one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class Position(Generic[Item]):
    applied: int = 0  # the highest sequence applied (0: none yet)
    held: Mapping[int, Item] = field(default_factory=dict)  # early events by sequence


def arrive(position: Position[Item], sequence: int | None, item: Item) -> tuple[Position[Item], list[Item]]:
    """The case's position after `item` (with `sequence`) arrives, and the items now
    ready to apply, in order (module docstring)."""
    if sequence is not None:
        if sequence <= position.applied or sequence in position.held:
            return position, []
        if sequence > position.applied + 1:
            return Position(position.applied, {**position.held, sequence: item}), []
    if not position.held:  # the usual case: nothing held, so only this one is ready
        return _position(position.applied + 1, position.held), [item]
    ready, held, applied = [item], dict(position.held), position.applied + 1
    while applied + 1 in held:
        applied += 1
        ready.append(held.pop(applied))
    return Position(applied, held), ready


def _position(applied: int, held: Mapping[int, Item]) -> Position[Item]:
    """`Position(applied, held)` without the frozen __init__ (a rebuild moves a million)."""
    position: Position[Item] = object.__new__(Position)
    position.__dict__.update(applied=applied, held=held)
    return position


def stop_before(position: Position[Item], failed: int, rest: list[Item]) -> Position[Item]:
    """The position when an item `arrive` made ready, with sequence `failed`, could not be
    applied (it goes to the dead letters, to be published again once fixed): the case
    waits just before it, and `rest` (the items ready after it, sequences `failed` + 1 …)
    are held again. For an event without a sequence, `failed` is the position it counted."""
    held = {**position.held, **{failed + 1 + index: item for index, item in enumerate(rest)}}
    return Position(failed - 1, held)
