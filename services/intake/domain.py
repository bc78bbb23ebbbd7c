"""Intake's pure rules: how an accepted event is made and what it does to its case
(who may post and read what is shared/policy.py's)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid

from pydantic import BaseModel

from shared.events import CASE_EVENT_MODELS, Actor, CaseAfter, Envelope
from shared.lifecycle import Case, Refused, apply_event
from shared.principal import Principal

# Not a case event, but history may carry it: the forwarding that already happened.
FORWARDED = "notification.forwarded"


def new_event(
    event_type: str,
    *,
    case_id: uuid.UUID,
    local_authority: str,
    principal: Principal,
    data: BaseModel,
    now: dt.datetime,
) -> Envelope:
    """A live event: received and recorded now, by the principal's token."""
    # CASE_EVENT_MODELS maps to Envelope subclasses, each with its `data` model.
    return CASE_EVENT_MODELS[event_type](
        event_id=uuid.uuid4(),
        event_type=event_type,
        case_id=case_id,
        local_authority=local_authority,
        received_at=now,
        recorded_at=now,
        actor=Actor(role=principal.role, id=principal.token_id),
        data=data,
    )


def next_case(case: Case | None, event: Envelope) -> Case:
    """The case after `event`, or `Refused` with the reason: the lifecycle's state machine
    for case events; a forwarding record (imported history) needs its case and changes nothing."""
    if case is not None and event.local_authority != case.local_authority:
        raise Refused(f"the case belongs to {case.local_authority}, not {event.local_authority}")
    if event.event_type == FORWARDED:
        if case is None:
            raise Refused(f"no case {event.case_id}: a forwarding record follows its case's notification")
        return case
    # The data read field by field, as plain values (the lifecycle reads strings,
    # booleans and dates), without copying the whole model for every event (issue 15).
    return apply_event(case, event)


def decide(case: Case | None, event: Envelope, **changes: object) -> tuple[Case, Envelope]:
    """The case after `event` (`next_case`, or `Refused`) and the event carrying that
    decision: a case event's `case_after` is the case as the lifecycle makes it, so that
    consumers read it instead of running the state machine again. A forwarding record is
    not a case event and carries none. `changes`: other fields of the event to set in the
    same copy (its sequence, when it is recorded)."""
    case = next_case(case, event)
    if event.event_type in CASE_EVENT_MODELS:
        changes["case_after"] = _case_after(case.state.value, case.sog_region, case.responded, case.closed_reason)
    return case, event.model_copy(update=changes) if changes else event


@functools.lru_cache(maxsize=1024)
def _case_after(state: str, sog_region: str | None, responded: bool, closed_reason: str | None) -> CaseAfter:
    """The decision an event carries, made once for each case it can describe (a frozen
    model, so shared): a history import decides hundreds of thousands (issue 15)."""
    return CaseAfter(state=state, sog_region=sog_region, responded=responded, closed_reason=closed_reason)


def event_content(event: Envelope) -> str:
    """What must match for a stored event to be the same event (not when it was recorded,
    nor the sequence and the case after it that intake gave it): an import skips an event
    stored with this content."""
    return json.dumps(event.model_dump(mode="json", exclude={"recorded_at", "sequence", "case_after"}), sort_keys=True)
