"""Intake's pure rules: who may post and read what, and how an accepted event is made."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel

from shared.auth import Principal
from shared.events import CASE_EVENT_MODELS, Actor, Envelope
from shared.lifecycle import POSTED_BY, Case, Refused, apply

# Not a case event, but history may carry it: the forwarding that already happened.
FORWARDED = "notification.forwarded"


class Forbidden(Exception):
    """The principal may not do this; the message says why (HTTP 403)."""


def may_read(principal: Principal, case: Case) -> bool:
    if principal.role == "inspectorate":
        return True
    if principal.role == "council":
        return principal.local_authority == case.local_authority
    if principal.role == "sog":
        return principal.region == case.sog_region
    return False


def check_may_post(principal: Principal, event_type: str, case: Case | None, local_authority: str) -> None:
    """Raise Forbidden unless the principal's role posts this event for this case."""
    roles = POSTED_BY[event_type]
    if principal.role not in roles:
        raise Forbidden(f"{event_type} is posted by {' or '.join(sorted(roles))}, not {principal.role}")
    if principal.role == "council" and principal.local_authority != local_authority:
        raise Forbidden(
            f"this token is for {principal.local_authority}; the case belongs to {local_authority}"
        )
    if principal.role == "sog" and (case is None or case.sog_region != principal.region):
        raise Forbidden(f"this case is not routed to the {principal.region} SOG")


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


def serialised_size(event: Envelope) -> int:
    """Bytes of the event as stored and published (the outbox row's value)."""
    return len(event.model_dump_json().encode())


def next_case(case: Case | None, event: Envelope) -> Case:
    """The case after `event`, or `Refused` with the reason: the lifecycle's state machine
    for case events; a forwarding record (imported history) needs its case and changes nothing."""
    if case is not None and event.local_authority != case.local_authority:
        raise Refused(f"the case belongs to {case.local_authority}, not {event.local_authority}")
    if event.event_type == FORWARDED:
        if case is None:
            raise Refused(f"no case {event.case_id}: a forwarding record follows its case's notification")
        return case
    return apply(case, event.event_type, event.local_authority, event.data.model_dump(mode="json"))
