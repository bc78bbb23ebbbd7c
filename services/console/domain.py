"""The console's pure rules: forms to API bodies, API refusals to field errors, which
actions a case offers whom, the timeline and the queues. No I/O here.

Form fields are named by their path in the API body (`mappa.category`,
`risk_assessment.tools`), so a 422's `loc` names the field it sits beside.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")

# How each form's fields become JSON: `text` (omitted when empty), `bool` (yes/no radios),
# `int`, `list` (checkboxes). A field left empty is left out, so the API names it.
NOTIFICATION_FIELDS = {
    "council_reference": "text",
    "incident_date": "text",
    "became_aware_date": "text",
    "criterion": "text",
    "incident_type": "text",
    "incident_type_detail": "text",
    "order_type": "text",
    "subject_role": "text",
    "supervising_local_authority": "text",
    "mappa.applies": "bool",
    "mappa.category": "int",
    "mappa.level": "int",
    "domestic_abuse_aggravated": "bool",
    "historical": "bool",
    "signed_off_by": "text",
}

# One entry per case action: the event it posts, and its fields.
ACTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "assess": ("notification.criteria_assessed", {"meets_criteria": "bool", "reason": "text"}),
    "sog-decision": ("sog.decision_recorded", {"scr_under_mappa": "bool"}),
    "review": (
        "review.submitted",
        {
            "review_type": "text",
            "signed_off_by": "text",
            "reviewer_independent": "bool",
            "risk_assessment.completed": "bool",
            "risk_assessment.up_to_date": "bool",
            "risk_assessment.tools": "list",
            "risk_management_plan.in_place": "bool",
            "risk_management_plan.informed_by_assessment": "bool",
            "order_reviews_referenced": "bool",
            "good_practice_identified": "bool",
            "findings": "list",
        },
    ),
    "request-information": ("review.additional_info_requested", {"note": "text"}),
    "provide-information": ("review.additional_info_provided", {}),
    "respond": (
        "review.responded",
        {"outcome": "text", "iar_decision_appropriate": "bool", "high_quality": "bool"},
    ),
    "close": ("case.closed", {"reason": "text"}),
}

# What to say when a required answer is missing (the API's "Field required").
MISSING = {
    "council_reference": "Enter your council's reference for this incident",
    "incident_date": "Enter the date of the incident",
    "criterion": "Choose which circumstance of the guidance applies",
    "incident_type": "Choose the type of incident",
    "order_type": "Choose the order or licence the person was on",
    "subject_role": "Choose whether the person under supervision was the perpetrator or the victim",
    "mappa.applies": "Say whether MAPPA applies",
    "mappa.category": "Choose the MAPPA category",
    "mappa.level": "Choose the MAPPA level",
    "domestic_abuse_aggravated": "Say whether the incident was aggravated by domestic abuse",
    "historical": "Say whether this is a historical incident",
    "signed_off_by": "Choose who signed this off",
    "meets_criteria": "Say whether the notification meets the criteria",
    "scr_under_mappa": "Say whether the SOG will hold a MAPPA significant case review",
    "review_type": "Choose the type of review",
    "reviewer_independent": "Say whether the reviewer was independent of the case",
    "risk_assessment.completed": "Say whether a risk assessment was completed",
    "risk_assessment.up_to_date": "Say whether the risk assessment was up to date",
    "risk_management_plan.in_place": "Say whether a risk management plan was in place",
    "risk_management_plan.informed_by_assessment": "Say whether the plan was informed by the assessment",
    "order_reviews_referenced": "Say whether the review refers to order or licence reviews",
    "good_practice_identified": "Say whether good practice was identified",
    "outcome": "Choose the outcome of the response",
    "reason": "Choose why the case is closing",
}


def body_of(form: Mapping[str, list[str]], fields: Mapping[str, str]) -> dict:
    """The API body a submitted form stands for (values as lists, as forms send them)."""
    body: dict = {}
    for name, kind in fields.items():
        values = [v.strip() for v in form.get(name, []) if v.strip()]
        value: object
        if kind == "list":
            value = values
        elif not values:
            continue
        elif kind == "bool":
            value = {"yes": True, "no": False}.get(values[0], values[0])
        elif kind == "int":
            value = int(values[0]) if values[0].isdigit() else values[0]
        else:
            value = values[0]
        _put(body, name.split("."), value)
    if body.get("mappa", {}).get("applies") is False:
        # The category and level go with MAPPA applying: a stale choice is not an answer.
        body["mappa"] = {"applies": False}
    return body


def _put(body: dict, path: list[str], value) -> None:
    for part in path[:-1]:
        body = body.setdefault(part, {})
    body[path[-1]] = value


def field_errors(detail) -> dict[str, str]:
    """A 422's errors by form field name: `{"mappa.category": "Choose the MAPPA category"}`.
    An error about a whole group (e.g. `mappa`) stays under the group's name."""
    errors: dict[str, str] = {}
    if not isinstance(detail, list):
        return {"": str(detail)}
    for error in detail:
        loc = [str(p) for p in error.get("loc", []) if p != "body"]
        name = ".".join(loc) or ""
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = MISSING.get(name, f"Answer this question ({name})")
        elif error.get("type") in ("literal_error", "enum"):
            message = "Choose one of the options"
        elif error.get("type") in ("bool_parsing", "bool_type"):
            message = "Choose yes or no"
        elif error.get("type", "").startswith("date"):
            message = _date_message(message)
        errors.setdefault(name, message)
    return errors


def _date_message(message: str) -> str:
    if "invalid" in message.lower() or "should be a valid date" in message.lower():
        return "Enter a real date, for example 2026-11-20"
    return message[:1].upper() + message[1:]


def dom_id(name: str) -> str:
    """The HTML id of a field (and the error summary's link to it)."""
    return "field-" + name.replace(".", "-").replace("_", "-") if name else "main-content"


# --- what a case offers whom -------------------------------------------------------------


@dataclass(frozen=True)
class CaseFacts:
    state: str
    local_authority: str
    sog_region: str | None
    responded: bool
    assessed: bool

    @property
    def open(self) -> bool:
        return self.state != "closed"


def facts_of(case: Mapping) -> CaseFacts:
    types = [e["event_type"] for e in case.get("events", [])]
    return CaseFacts(
        state=case["state"],
        local_authority=case["local_authority"],
        sog_region=case.get("sog_region"),
        responded="review.responded" in types,
        assessed="notification.criteria_assessed" in types,
    )


def actions_for(role: str, case: CaseFacts) -> list[str]:
    """The actions whose forms the case page shows this role, as the lifecycle allows
    them (shared/lifecycle.py); intake still decides, and says why when it refuses."""
    if not case.open:
        return []
    concluded = case.state == "concluded"
    offered: list[str] = []
    if role == "council":
        if case.state in ("notified", "awaiting_review"):
            offered.append("review")
        if case.state == "awaiting_information":
            offered.append("provide-information")
    elif role == "inspectorate":
        if not concluded and not case.responded and not case.assessed:
            offered.append("assess")
        if case.state == "under_review":
            offered += ["request-information", "respond"]
        if case.sog_region and not concluded:
            offered.append("sog-decision")
        offered.append("close")
    elif role == "sog":
        if case.sog_region and not concluded:
            offered.append("sog-decision")
    return offered


# --- the timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    kind: str  # event, deadline, delivery
    title: str
    detail: str = ""


def timeline(events: Iterable[Mapping], deadlines: Iterable[Mapping], deliveries: Iterable[Mapping],
             label) -> list[Entry]:
    """Every event, deadline and delivery of a case, in time order. `label(kind, value)`
    words a vocabulary value."""
    entries: list[Entry] = []
    for event in events:
        entries.append(Entry(_at(event["recorded_at"]), "event", EVENT_TITLES.get(event["event_type"], event["event_type"]),
                             _event_detail(event, label)))
    for d in deadlines:
        rule = label("rule", d["rule"])
        entries.append(Entry(_at(d["started_at"]), "deadline", f"Deadline opened: {rule}",
                             f"Due by {due(d['due_at'])} ({d['limit']}, owed by the {d['owner']})"))
        if d.get("warned_at"):
            entries.append(Entry(_at(d["warned_at"]), "deadline", f"Deadline warning: {rule}", f"Due by {due(d['due_at'])}"))
        if d.get("breached_at"):
            entries.append(Entry(_at(d["breached_at"]), "deadline", f"Deadline breached: {rule}",
                                 f"Was due by {due(d['due_at'])}"))
        if d.get("met_at"):
            late = d.get("working_days_late")
            entries.append(Entry(_at(d["met_at"]), "deadline", f"Deadline met: {rule}",
                                 f"{late} working days late" if late else "In time"))
        if d.get("cancelled_at"):
            entries.append(Entry(_at(d["cancelled_at"]), "deadline", f"Deadline cancelled: {rule}", "The case closed"))
    for delivery in deliveries:
        recipient = recipient_name(delivery["recipient"])
        if delivery.get("delivered_at"):
            entries.append(Entry(_at(delivery["delivered_at"]), "delivery", f"Forwarded to {recipient}",
                                 f"By {delivery.get('channel') or 'its channel'}, attempt {delivery['attempts']}"))
        elif delivery.get("failed_at"):
            entries.append(Entry(_at(delivery["failed_at"]), "delivery", f"Forwarding to {recipient} failed",
                                 delivery.get("last_error") or ""))
        else:
            entries.append(Entry(_at(delivery["created_at"]), "delivery", f"Forwarding to {recipient} pending",
                                 f"{delivery['attempts']} attempts so far"))
    return sorted(entries, key=lambda e: e.at)


EVENT_TITLES = {
    "incident.notified": "Incident notified",
    "notification.criteria_assessed": "Criteria assessed",
    "sog.decision_recorded": "SOG decision recorded",
    "review.submitted": "Review submitted",
    "review.additional_info_requested": "Additional information requested",
    "review.additional_info_provided": "Additional information provided",
    "review.responded": "Inspectorate responded",
    "case.closed": "Case closed",
}


def _event_detail(event: Mapping, label) -> str:
    data, kind = event.get("data") or {}, event["event_type"]
    if kind == "incident.notified":
        return f"{label('incident_type', data['incident_type'])}; {label('criterion', data['criterion'])}"
    if kind == "notification.criteria_assessed":
        verdict = "Meets the criteria" if data.get("meets_criteria") else "Does not meet the criteria"
        return f"{verdict}. {data['reason']}" if data.get("reason") else verdict
    if kind == "sog.decision_recorded":
        if data.get("scr_under_mappa"):
            return "A MAPPA significant case review will be held"
        return "No MAPPA significant case review: the SIR continues"
    if kind == "review.submitted":
        return label("review_type", data["review_type"])
    if kind == "review.additional_info_requested":
        return data.get("note") or ""
    if kind == "review.responded":
        return "Concluded" if data["outcome"] == "concluded" else "A comprehensive review is required"
    if kind == "case.closed":
        return CLOSE_REASONS.get(data["reason"], data["reason"])
    return ""


CLOSE_REASONS = {
    "concluded": "Concluded",
    "criteria_not_met": "Criteria not met",
    "superseded_by_mappa_scr": "Superseded by a MAPPA significant case review",
    "withdrawn": "Withdrawn",
}

STATES = {
    "notified": "Notified",
    "awaiting_review": "Awaiting review",
    "under_review": "Under review",
    "awaiting_information": "Awaiting information",
    "concluded": "Concluded",
    "closed": "Closed",
}


# Intake's categorisation warnings (shared/categorisation.py GAPS), said as a council
# would want to read them on the form; any other warning is shown with intake's reason.
WARNING_TEXT = {
    "incident_type_detail": "The type of incident is Other: say in a few words what happened.",
    "domestic_abuse_aggravated": "Say whether domestic abuse aggravated this incident: for a violent or sexual"
                                 " incident the Inspectorate follows up when it is not stated.",
    "became_aware_date": "This is more than five working days after the incident: give the date your service"
                         " became aware of it.",
}


def warning_text(warning) -> str:
    """A categorisation warning of intake's answer (`{"field", "reason"}`) as a sentence."""
    if isinstance(warning, str):
        return warning
    if warning.get("field") in WARNING_TEXT:
        return WARNING_TEXT[warning["field"]]
    reason = str(warning.get("reason") or warning.get("message") or warning)
    return f"Please follow up: {reason}."


def region_name(slug: str | None) -> str:
    """A MAPPA region's slug as a name: `lothian-and-borders` → "Lothian and Borders"."""
    return (slug or "").replace("-", " ").title().replace(" And ", " and ")


def recipient_name(recipient: str) -> str:
    """`scottish-government` → "the Scottish Government", `sog:glasgow` → "the Glasgow SOG"."""
    if recipient == "scottish-government":
        return "the Scottish Government"
    return f"the {region_name(recipient.removeprefix('sog:'))} SOG"


def in_words(message) -> str:
    """An API's refusal with its state names as people say them ("awaiting information")."""
    text = str(message)
    for state, words in STATES.items():
        text = re.sub(rf"\b{state}\b", words.lower(), text)
    return text


def _at(value: str | dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def when(moment: dt.datetime) -> str:
    """A moment as people in Scotland read it: 3 December 2026, 17:00."""
    local = moment.astimezone(LONDON)
    return f"{local.day} {local:%B %Y, %H:%M}"


def due_day(moment: dt.datetime | str) -> dt.date:
    """The last day something may be done in time: a deadline falling due at midnight (the
    start of the next working day, or the end of a month's last day) is due by the end of
    the day before."""
    local = _at(moment).astimezone(LONDON)
    if local.time() == dt.time(0, 0):
        return local.date() - dt.timedelta(days=1)
    return local.date()


def due(moment: dt.datetime | str) -> str:
    """A due time as people read it: "end of 2 December 2026"."""
    local = _at(moment).astimezone(LONDON)
    if local.time() == dt.time(0, 0) or local.time() >= dt.time(23, 59):
        last = due_day(moment)
        return f"the end of {last.day} {last:%B %Y}"
    return when(local)


def due_date(moment: dt.datetime | str) -> str:
    last = due_day(moment)
    return f"{last.day} {last:%B %Y}"


def day(moment: dt.datetime | str) -> str:
    local = _at(moment).astimezone(LONDON)
    return f"{local.day} {local:%B %Y}"


# --- lists and queues --------------------------------------------------------------------


def next_deadline(case: Mapping) -> Mapping | None:
    owed = sorted(case.get("deadlines") or [], key=lambda d: d["due_at"])
    return owed[0] if owed else None


def overdue_first(cases: list[Mapping]) -> list[Mapping]:
    """Overdue cases first, then by the next deadline's due time (none last)."""
    def key(case):
        upcoming = next_deadline(case)
        return (not case.get("overdue"), upcoming is None, upcoming["due_at"] if upcoming else "")
    return sorted(cases, key=key)


def days_left(due_at: dt.datetime | str, now: dt.datetime) -> int:
    """Whole calendar days from today to the due day in Scotland (negative: overdue)."""
    return (due_day(due_at) - now.astimezone(LONDON).date()).days


def awaiting(deadlines: Iterable[Mapping]) -> list[Mapping]:
    """Deadlines still owed (open, or breached and not met), most overdue first."""
    owed = [d for d in deadlines if d["status"] == "open" or (d["status"] == "breached" and not d.get("met_at"))]
    return sorted(owed, key=lambda d: d["due_at"])


def recent_breaches(deadlines: Iterable[Mapping], now: dt.datetime, days: int = 30) -> list[Mapping]:
    since = now - dt.timedelta(days=days)
    recent = [d for d in deadlines if d.get("breached_at") and _at(d["breached_at"]) >= since]
    return sorted(recent, key=lambda d: d["breached_at"], reverse=True)
