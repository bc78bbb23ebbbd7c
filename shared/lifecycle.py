"""The case lifecycle of SPEC §3 as a pure state machine.

`apply` takes a case (or None before its notification) and one case event and gives the
next case, or raises `Refused` with the reason a person can act on. Intake uses it to
refuse events that do not fit; reporting folds the same events into the same states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.reference import mappa_region_of


class State(StrEnum):
    NOTIFIED = "notified"
    AWAITING_REVIEW = "awaiting_review"
    UNDER_REVIEW = "under_review"
    AWAITING_INFORMATION = "awaiting_information"
    CONCLUDED = "concluded"
    CLOSED = "closed"


# Which roles may post each case event (SPEC §3, "posted by").
POSTED_BY: Mapping[str, frozenset[str]] = {
    "incident.notified": frozenset({"council"}),
    "notification.criteria_assessed": frozenset({"inspectorate"}),
    "sog.decision_recorded": frozenset({"sog", "inspectorate"}),
    "review.submitted": frozenset({"council"}),
    "review.additional_info_requested": frozenset({"inspectorate"}),
    "review.additional_info_provided": frozenset({"council"}),
    "review.responded": frozenset({"inspectorate"}),
    "case.closed": frozenset({"inspectorate"}),
}


class Refused(Exception):
    """The event does not fit the case's state; the message says why."""


@dataclass(frozen=True)
class Case:
    local_authority: str
    state: State
    # The SOG region the notification is routed to, where MAPPA applies.
    sog_region: str | None
    responded: bool = False
    closed_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state is not State.CLOSED


def sog_region_of(local_authority: str, notification: Mapping) -> str | None:
    """The MAPPA region whose SOG must know: the supervising authority's, else the notifier's."""
    if not notification["mappa"]["applies"]:
        return None
    supervising = notification.get("supervising_local_authority") or local_authority
    return mappa_region_of(supervising, on=_as_date(notification["incident_date"]))


def apply(case: Case | None, event_type: str, local_authority: str, data: Mapping) -> Case:
    """The case after `event_type` with `data` (plain JSON-like values), or `Refused`."""
    if event_type not in POSTED_BY:
        raise Refused(f"{event_type} is not a case event")
    if case is None:
        if event_type != "incident.notified":
            raise Refused(f"{event_type} before the case's notification")
        return Case(local_authority, State.NOTIFIED, sog_region_of(local_authority, data))
    if event_type == "incident.notified":
        raise Refused("the case has been notified already")
    if not case.is_open:
        raise Refused(f"the case is closed ({case.closed_reason}); nothing follows its closing")
    if case.state is State.CONCLUDED and event_type != "case.closed":
        raise Refused("the review is concluded; only closing the case may follow")
    return _TRANSITIONS[event_type](case, data)


def case_after(previous: Case | None, event: Any) -> Case:
    """The case after a case event as intake decided it: read from the event's
    `case_after` (the decision travels with the event), or, for an event recorded before
    events carried it, worked out again by `apply` from `previous`. Consumers call this;
    none runs the state machine itself."""
    carried = getattr(event, "case_after", None)
    if carried is not None:
        return Case(
            previous.local_authority if previous is not None else event.local_authority,
            State(carried.state), carried.sog_region, carried.responded, carried.closed_reason,
        )
    return apply_event(previous, event)


def apply_event(case: Case | None, event: Any) -> Case:
    """`apply` to a case event (an envelope model), its data read field by field."""
    return apply(case, event.event_type, event.local_authority, _Fields(event.data))


class _Fields(Mapping):
    """An event's data (a model) read as the mapping `apply` takes, field by field, nested
    models alike: what `model_dump` would give for the fields `apply` reads (booleans,
    strings, dates), without copying the whole model for every event of a rebuild."""

    __slots__ = ("_model",)

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getitem__(self, name: str) -> Any:
        try:
            value = getattr(self._model, name)
        except AttributeError:
            raise KeyError(name) from None
        return _Fields(value) if hasattr(type(value), "model_fields") else value

    def __iter__(self):
        return iter(type(self._model).model_fields)

    def __len__(self) -> int:
        return len(type(self._model).model_fields)


def fold(events: Iterable[tuple[str, str, Mapping]]) -> Case | None:
    """The case that a history of (event_type, local_authority, data) leads to."""
    case = None
    for event_type, local_authority, data in events:
        case = apply(case, event_type, local_authority, data)
    return case


def _criteria_assessed(case: Case, data: Mapping) -> Case:
    if case.responded:
        raise Refused("criteria can be assessed only before the first response to a review")
    if not data["meets_criteria"]:
        return _closed(case, "criteria_not_met")
    return case


def _sog_decision(case: Case, data: Mapping) -> Case:
    if case.sog_region is None:
        raise Refused("MAPPA does not apply to this case, so no SOG decision is due")
    return _closed(case, "superseded_by_mappa_scr") if data["scr_under_mappa"] else case


def _review_submitted(case: Case, data: Mapping) -> Case:
    if case.state not in (State.NOTIFIED, State.AWAITING_REVIEW):
        raise Refused(f"a review is not awaited: the case is {case.state}")
    return replace(case, state=State.UNDER_REVIEW)


def _info_requested(case: Case, data: Mapping) -> Case:
    if case.state is not State.UNDER_REVIEW:
        raise Refused(f"there is no review under consideration: the case is {case.state}")
    return replace(case, state=State.AWAITING_INFORMATION)


def _info_provided(case: Case, data: Mapping) -> Case:
    if case.state is not State.AWAITING_INFORMATION:
        raise Refused(f"no additional information was requested: the case is {case.state}")
    return replace(case, state=State.UNDER_REVIEW)


def _responded(case: Case, data: Mapping) -> Case:
    if case.state is not State.UNDER_REVIEW:
        raise Refused(f"there is no review to respond to: the case is {case.state}")
    state = State.CONCLUDED if data["outcome"] == "concluded" else State.AWAITING_REVIEW
    return replace(case, state=state, responded=True)


def _closed_event(case: Case, data: Mapping) -> Case:
    return _closed(case, data["reason"])


def _closed(case: Case, reason: str) -> Case:
    return replace(case, state=State.CLOSED, closed_reason=reason)


def replace(case: Case, **changes: Any) -> Case:
    """`dataclasses.replace` of a case (which has no __post_init__), without re-running the
    frozen __init__: reporting's rebuild folds a million events through here."""
    new = object.__new__(Case)
    new.__dict__.update(case.__dict__, **changes)
    return new


_TRANSITIONS = {
    "notification.criteria_assessed": _criteria_assessed,
    "sog.decision_recorded": _sog_decision,
    "review.submitted": _review_submitted,
    "review.additional_info_requested": _info_requested,
    "review.additional_info_provided": _info_provided,
    "review.responded": _responded,
    "case.closed": _closed_event,
}


def _as_date(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
