"""Reporting's pure rules: how events become projection rows, and how counts over those
rows become the report's figures (docs/reports.md states every rule written here).

Projection: three deciders (shared/decider.py), one per topic and one fold per fact.
`decide_case` folds a case event into the case's row (its notification, with the case's
lifecycle as intake decided it, read from the event) and its reviews; `decide_forward`
keeps the first delivery to each recipient; `decide_deadline` each deadline (its times
and status). The live consumers run them behind shared/process.py (services/reporting/
handlers.py); `sir report rebuild` folds the same functions over every event in memory,
so the two cannot disagree. The casework view (casework.py) is a query over these rows.

Report: the repository aggregates the rows of a period in SQL (counts only, grouped);
`national_report` and `quarterly_report` turn those counts into the report's JSON shape.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared import categorisation
from shared.calendar import Timescale, add_months, end_of_day, judge, late_by, local_date
from shared.decider import Context, Decision
from shared.events import Envelope
from shared.lifecycle import POSTED_BY, Case, Refused, State, case_after
from shared.reference import LOCAL_AUTHORITIES, VOCABULARIES, label

log = logging.getLogger(__name__)

# The timescales the national report measures (SPEC §4). Not configuration: the report
# reproduces the guidance's own figures.
NOTIFICATION_WORKING_DAYS = 5
SG_FORWARD_WORKING_DAYS = 2
# Both judged by the one verdict (shared.calendar.judge), as the deadlines service judges them.
NOTIFICATION_TIMESCALE = Timescale(working_days=NOTIFICATION_WORKING_DAYS)
SG_FORWARD_TIMESCALE = Timescale(working_days=SG_FORWARD_WORKING_DAYS)
REVIEW_MONTHS = 3
RESPONSE_MONTHS = 1
SCOTTISH_GOVERNMENT = "scottish-government"
# "signed off by an appropriate criminal justice service manager or senior manager"
NOTIFICATION_SIGN_OFF_SENIOR = frozenset(
    {"service_manager", "senior_manager", "head_of_justice_social_work", "chief_social_work_officer"}
)
# "signed off by the head of criminal justice social work services or chief social work officers"
REVIEW_SIGN_OFF_SENIOR = frozenset({"head_of_justice_social_work", "chief_social_work_officer"})


# --- projection rows ------------------------------------------------------------------


def replace(row, **changes):
    """`dataclasses.replace` for these frozen rows, without re-running __init__ (the
    rebuild folds a million events through here)."""
    new = object.__new__(type(row))
    new.__dict__.update(row.__dict__, **changes)
    return new


_DEFAULTS: dict[type, dict[str, Any]] = {}
Row = TypeVar("Row")


def make(row_type: type[Row], **values: Any) -> Row:
    """`row_type(**values)` for these frozen rows (no __post_init__; a field with a default
    factory must be given), without the frozen __init__'s setattr per field."""
    defaults = _DEFAULTS.get(row_type)
    if defaults is None:
        defaults = _DEFAULTS[row_type] = {
            f.name: f.default for f in dataclasses.fields(row_type)  # type: ignore[arg-type]
            if f.default is not dataclasses.MISSING
        }
    row: Row = object.__new__(row_type)
    row.__dict__.update(defaults, **values)
    return row


def same(a, b) -> bool:
    """`a == b` for two of these rows (or None): the same type and field values, compared
    as their dicts (every field is in each: made by __init__, `make` or `replace`)."""
    return a is b or (a is not None and b is not None and a.__class__ is b.__class__ and a.__dict__ == b.__dict__)


@dataclass(frozen=True)
class Notification:
    """A row of `reporting.notifications` (fields in column order)."""

    case_id: uuid.UUID
    local_authority: str
    received_at: dt.datetime
    received_on: dt.date
    incident_date: dt.date
    working_days_taken: int
    criterion: str
    incident_type: str
    order_type: str
    subject_role: str
    mappa_applies: bool
    mappa_category: int | None
    mappa_level: int | None
    domestic_abuse_aggravated: bool | None  # None: not known (incident.notified version 2)
    historical: bool
    signed_off_by: str
    sg_forward_due_at: dt.datetime
    meets_criteria: bool | None = None
    review_owed_since: dt.date | None = None
    closed_on: dt.date | None = None
    closed_reason: str | None = None
    council_reference: str | None = None
    recorded_from: dt.datetime | None = None  # since when the platform knew this version of the row
    categorisation_gaps: tuple[str, ...] = ()  # shared.categorisation.gaps


@dataclass(frozen=True)
class Review:
    """A row of `reporting.reviews` (fields in column order)."""

    review_id: uuid.UUID
    case_id: uuid.UUID
    local_authority: str
    received_at: dt.datetime
    received_on: dt.date
    review_type: str
    signed_off_by: str
    reviewer_independent: bool
    risk_assessment_completed: bool
    risk_assessment_up_to_date: bool
    risk_tools: tuple[str, ...]
    risk_management_plan_in_place: bool
    risk_management_plan_informed: bool
    order_reviews_referenced: bool
    good_practice_identified: bool
    findings: tuple[str, ...]
    submission_due_on: dt.date
    response_due_on: dt.date
    info_requests: int = 0
    responded_at: dt.datetime | None = None
    responded_on: dt.date | None = None
    outcome: str | None = None
    iar_decision_appropriate: bool | None = None
    high_quality: bool | None = None
    recorded_from: dt.datetime | None = None


@dataclass(frozen=True)
class CaseRows:
    """A case as reporting keeps it: one row of `reporting.notifications` (the report's
    columns in `notification`, the case's current lifecycle in `case` and `imported`) and
    its reviews. The decider's state for the case-events consumer."""

    notification: Notification
    reviews: tuple[Review, ...] = ()  # in the order received
    # The lifecycle after the case's latest event, as intake decided it (shared.lifecycle.case_after);
    # None: not known (a row from before the casework view, until `sir report rebuild`).
    case: Case | None = None
    imported: bool = False  # the notification came in imported history
    # Versions of the rows replaced since the state was loaded, (table, row, recorded_to):
    # saved to `<table>_versions` (reports as of a moment).
    replaced: tuple[tuple[str, Any, dt.datetime | None], ...] = ()


@dataclass(frozen=True)
class Forward:
    case_id: uuid.UUID
    recipient: str
    local_authority: str
    delivered_at: dt.datetime
    delivered_on: dt.date
    recorded_from: dt.datetime | None = None


# A deadline's status (the casework view): the last event's, but a later status never gives
# way to an earlier one (a warning after a breach, anything after met or cancelled).
DEADLINE_STATUS = {
    "deadline.opened": "open",
    "deadline.warning": "warning",
    "deadline.breached": "breached",
    "deadline.met": "met",
    "deadline.cancelled": "cancelled",
}
_STATUS_RANK = {"open": 0, "warning": 1, "breached": 2, "met": 3, "cancelled": 3}


def next_status(current: str | None, event_type: str) -> str:
    """The deadline's status after `event_type`, given its status so far (None: unseen)."""
    new = DEADLINE_STATUS[event_type]
    if current is None or _STATUS_RANK[new] > _STATUS_RANK[current]:
        return new
    return current


@dataclass(frozen=True)
class Deadline:
    """A row of `reporting.deadlines`: one deadline (case, rule, started_at), for the
    quarterly report's overdue items and breaches and the casework view's owed deadlines."""

    case_id: uuid.UUID
    rule: str
    started_at: dt.datetime
    local_authority: str
    due_at: dt.datetime
    met_at: dt.datetime | None = None
    breached_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    recorded_from: dt.datetime | None = None
    status: str | None = None  # next_status (None: a row from before the casework view)
    working_days_late: int | None = None


@dataclass(frozen=True)
class CaseForwards:
    """The first delivery of a case's notification to each recipient (the routing-events
    consumer's state), and the versions replaced since loaded."""

    rows: Mapping[str, Forward] = field(default_factory=dict)
    replaced: tuple[tuple[Forward, dt.datetime | None], ...] = ()


@dataclass(frozen=True)
class CaseDeadlines:
    """A case's deadlines by (rule, started_at) (the deadline-events consumer's state), and
    the versions replaced since loaded."""

    rows: Mapping[tuple[str, dt.datetime], Deadline] = field(default_factory=dict)
    replaced: tuple[tuple[Deadline, dt.datetime | None], ...] = ()


NO_FORWARDS = CaseForwards()
NO_DEADLINES = CaseDeadlines()


def notification_of(event: Envelope) -> Notification:
    data = event.data
    received_on = local_date(event.received_at)
    notified = judge(data.incident_date, NOTIFICATION_TIMESCALE, received_on)  # by days: the same verdict
    assert notified.working_days_taken is not None  # a stop (received_at) was given
    return make(
        Notification,
        case_id=event.case_id,
        local_authority=event.local_authority,
        received_at=event.received_at,
        received_on=received_on,
        incident_date=data.incident_date,
        working_days_taken=notified.working_days_taken,
        criterion=data.criterion,
        incident_type=data.incident_type,
        order_type=data.order_type,
        subject_role=data.subject_role,
        mappa_applies=data.mappa.applies,
        mappa_category=data.mappa.category,
        mappa_level=data.mappa.level,
        domestic_abuse_aggravated=data.domestic_abuse_aggravated,
        historical=data.historical,
        signed_off_by=data.signed_off_by,
        sg_forward_due_at=judge(received_on, SG_FORWARD_TIMESCALE).due_at,
        review_owed_since=received_on,
        council_reference=data.council_reference,
        recorded_from=event.recorded_at,
        categorisation_gaps=tuple(categorisation.gaps(data, event.received_at)),
    )


def _review_of(event: Envelope, owed_since: dt.date) -> Review:
    data = event.data
    received_on = local_date(event.received_at)
    return make(
        Review,
        review_id=event.event_id,
        case_id=event.case_id,
        local_authority=event.local_authority,
        received_at=event.received_at,
        received_on=received_on,
        review_type=data.review_type,
        signed_off_by=data.signed_off_by,
        reviewer_independent=data.reviewer_independent,
        risk_assessment_completed=data.risk_assessment.completed,
        risk_assessment_up_to_date=data.risk_assessment.up_to_date,
        risk_tools=tuple(dict.fromkeys(data.risk_assessment.tools)),  # each once
        risk_management_plan_in_place=data.risk_management_plan.in_place,
        risk_management_plan_informed=data.risk_management_plan.informed_by_assessment,
        order_reviews_referenced=data.order_reviews_referenced,
        good_practice_identified=data.good_practice_identified,
        findings=tuple(dict.fromkeys(data.findings)),
        submission_due_on=add_months(owed_since, REVIEW_MONTHS),
        response_due_on=add_months(received_on, RESPONSE_MONTHS),
    )


def lifecycle_after(previous: Case | None, event: Envelope) -> Case | None:
    """The case's lifecycle after a case event as intake decided it (`case_after`, carried
    by the event, or worked out for an event recorded before it was); if the event does not
    fit (intake and this deployment's rules disagree), the lifecycle stays as it was."""
    try:
        return case_after(previous, event)
    except Refused as refusal:
        log.warning("reporting: event %s (%s) of case %s does not fit: %s",
                    event.event_id, event.event_type, event.case_id, refusal)
        return previous


def apply_case_event(case: CaseRows | None, event: Envelope, imported: bool = False) -> CaseRows | None:
    """The case's rows after one case event (None: no notification seen, nothing to count);
    `imported`: the event came in imported history (marks a notification for good).

    Intake's state machine has accepted every event already, so this only records: the
    lifecycle (state, SOG region, whether closed and why) is intake's decision carried by
    the event; an event that finds nothing to attach to (a response with no open review)
    changes nothing. Each report row the event changes or makes is stamped with the
    event's `recorded_at` (`recorded_from`): since when the platform knew that version;
    the version it replaces goes to `replaced`, current until then (reports as of a
    moment). The lifecycle columns are the case's current state only (the casework view):
    a change to them alone replaces no version.
    """
    if event.event_type == "incident.notified":
        if case is not None:
            return case
        return _rows(notification_of(event), (), lifecycle_after(None, event), imported, ())
    if case is None or event.event_type not in POSTED_BY:
        return case
    lifecycle = lifecycle_after(case.case, event)
    if lifecycle == case.case:
        lifecycle = case.case
    recorded_at = event.recorded_at
    n, reviews, replaced = case.notification, case.reviews, case.replaced
    changes, review_changes = _changes(case, event, lifecycle)
    if changes:
        replaced += (("notifications", n, recorded_at),)
        n = replace(n, recorded_from=recorded_at, **changes)
    if review_changes is not None:
        index, changed = review_changes
        if index is None:  # a new review
            reviews += (replace(changed, recorded_from=recorded_at),)
        else:
            replaced += (("reviews", reviews[index], recorded_at),)
            reviews = (*reviews[:index], replace(reviews[index], recorded_from=recorded_at, **changed),
                       *reviews[index + 1:])
    elif not changes and lifecycle is case.case:
        return case
    return _rows(n, reviews, lifecycle, case.imported, replaced)


def _rows(notification: Notification, reviews: tuple[Review, ...], lifecycle: Case | None, imported: bool,
          replaced: tuple) -> CaseRows:
    rows = object.__new__(CaseRows)
    rows.__dict__.update(notification=notification, reviews=reviews, case=lifecycle, imported=imported,
                         replaced=replaced)
    return rows


def _open_review(reviews: tuple[Review, ...]) -> int | None:
    """The index of the latest review still awaiting a response (None: none)."""
    for index in range(len(reviews) - 1, -1, -1):
        if reviews[index].responded_on is None:
            return index
    return None


def _changes(case: CaseRows, event: Envelope, lifecycle: Case | None) -> tuple[dict, tuple[int | None, Any] | None]:
    """What the event changes: the notification's columns that take a new value, and the
    review it adds (None, the new review) or changes (its index, the columns' new values)."""
    kind, n, data = event.event_type, case.notification, event.data
    changes: dict[str, Any] = {}
    review: tuple[int | None, Any] | None = None
    if kind == "notification.criteria_assessed":
        if n.meets_criteria is not data.meets_criteria:
            changes["meets_criteria"] = data.meets_criteria
    elif kind == "review.submitted":
        review = (None, _review_of(event, n.review_owed_since or n.received_on))
    elif kind == "review.additional_info_requested":
        index = _open_review(case.reviews)
        if index is not None:
            review = (index, {"info_requests": case.reviews[index].info_requests + 1})
    elif kind == "review.responded":
        index = _open_review(case.reviews)
        if index is not None:
            on = local_date(event.received_at)
            review = (index, {
                "responded_at": event.received_at, "responded_on": on, "outcome": data.outcome,
                "iar_decision_appropriate": data.iar_decision_appropriate, "high_quality": data.high_quality,
            })
            if data.outcome == "comprehensive_review_required" and n.review_owed_since != on:
                changes["review_owed_since"] = on
    # Closed: on the day of the event that closed the case, for the reason intake decided
    # (criteria not met, superseded by a MAPPA SCR, or case.closed's); the first closing counts.
    if lifecycle is not None and lifecycle.state is State.CLOSED and n.closed_on is None:
        changes["closed_on"] = local_date(event.received_at)
        changes["closed_reason"] = lifecycle.closed_reason
    return changes, review


def decide_case(state: CaseRows | None, event: Envelope, context: Context) -> Decision[CaseRows | None]:
    """The case-events consumer: the case's rows after one case event, with the versions
    it replaced kept in `replaced` (shared/decider.py)."""
    return Decision(apply_case_event(state, event, context.imported))


def forward_of(event: Envelope) -> Forward | None:
    """A delivery of a notification; None for anything else on the routing topic."""
    if event.event_type != "notification.forwarded":
        return None
    delivered_at = event.data.delivered_at
    return make(
        Forward, case_id=event.case_id, recipient=event.data.recipient, local_authority=event.local_authority,
        delivered_at=delivered_at, delivered_on=local_date(delivered_at), recorded_from=event.recorded_at,
    )


def first_forward(current: Forward | None, new: Forward) -> Forward:
    """The first delivery to a recipient is the one that counts."""
    return new if current is None or new.delivered_at < current.delivered_at else current


def decide_forward(state: CaseForwards, event: Envelope, context: Context) -> Decision[CaseForwards]:
    """The routing-events consumer: a case's first forward to each recipient."""
    forward = forward_of(event)
    if forward is None:
        return Decision(state)
    current = state.rows.get(forward.recipient)
    chosen = first_forward(current, forward)
    if same(chosen, current):
        return Decision(state)
    replaced = state.replaced if current is None else state.replaced + ((current, chosen.recorded_from),)
    return Decision(make(CaseForwards, rows={**state.rows, forward.recipient: chosen}, replaced=replaced))


def apply_deadline_event(current: Deadline | None, event: Envelope) -> Deadline | None:
    kind, data = event.event_type, event.data
    if kind not in DEADLINE_STATUS:
        return None
    row = current or make(
        Deadline, case_id=event.case_id, rule=data.rule, started_at=data.started_at,
        local_authority=event.local_authority, due_at=data.due_at,
    )
    # Known from the latest event folded into it (whatever the order they came in, as the
    # row itself): so the live projection is the same in any delivery order.
    known = event.recorded_at if row.recorded_from is None else max(row.recorded_from, event.recorded_at)
    changed = replace(
        row,
        due_at=data.due_at,
        met_at=data.met_at or row.met_at,
        breached_at=data.breached_at or row.breached_at,
        cancelled_at=(row.cancelled_at or event.received_at) if kind == "deadline.cancelled" else row.cancelled_at,
        recorded_from=known,
        status=next_status(row.status if current is not None else None, kind),
        working_days_late=data.working_days_late if data.working_days_late is not None else row.working_days_late,
    )
    return current if same(changed, current) else changed


def decide_deadline(state: CaseDeadlines, event: Envelope, context: Context) -> Decision[CaseDeadlines]:
    """The deadline-events consumer: each of a case's deadlines after one deadline event."""
    if event.event_type not in DEADLINE_STATUS:
        return Decision(state)
    key = (event.data.rule, event.data.started_at)
    current = state.rows.get(key)
    row = apply_deadline_event(current, event)
    if row is None or row is current:
        return Decision(state)
    replaced = state.replaced if current is None else state.replaced + ((current, row.recorded_from),)
    return Decision(make(CaseDeadlines, rows={**state.rows, key: row}, replaced=replaced))


# The figures the timeliness table's rows show (its keys: the drill-down lists their cases).
TIMELINESS_FIGURES = (
    "notified_within_5_working_days", "forwarded_to_sg_within_2_working_days",
    "inspectorate_responses_within_1_month", "reviews_within_3_months",
)


# --- the report's arithmetic ----------------------------------------------------------


def half_up(value: Decimal | int, places: int = 1) -> float:
    """Rounded half up (away from zero at .5), as a statistician rounds: never to even."""
    return float(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def percent(count: int, base: int) -> float | None:
    """100 × count / base, half up to one decimal (49/80 → 61.3); None when the base is empty."""
    return half_up(Decimal(100 * count) / Decimal(base)) if base else None


def ratio(count: int, base: int) -> dict:
    """A share of a base; percent to one decimal place (half up), None when the base is empty."""
    return {"count": count, "base": base, "percent": percent(count, base)}


def statistics(histogram: Mapping[int, int]) -> dict | None:
    """min, max, median and mean of the values a histogram {value: how many} counts;
    the median of an even count is the mean of the middle two; mean to one decimal."""
    values = sorted((v, n) for v, n in histogram.items() if n)
    total = sum(n for _, n in values)
    if not total:
        return {"min": None, "max": None, "median": None, "mean": None}

    def nth(index: int) -> int:
        for value, n in values:
            if index < n:
                return value
            index -= n
        raise IndexError(index)

    middle = (nth((total - 1) // 2) + nth(total // 2)) / 2
    return {
        "min": values[0][0],
        "max": values[-1][0],
        "median": int(middle) if middle == int(middle) else middle,
        "mean": half_up(Decimal(sum(v * n for v, n in values)) / total),
    }


@dataclass
class NotificationCounts:
    total: int = 0
    by_authority: Counter = field(default_factory=Counter)
    by_incident_type: Counter = field(default_factory=Counter)
    by_criterion: Counter = field(default_factory=Counter)
    by_sign_off: Counter = field(default_factory=Counter)
    by_order_type: Counter = field(default_factory=Counter)
    by_mappa: Counter = field(default_factory=Counter)  # (category, level) where MAPPA applies
    working_days: Counter = field(default_factory=Counter)  # working days taken -> notifications
    # The counts of repository.NOTIFICATION_COUNTS (in_time, late, meets_criteria, sg_forwarded…),
    # each a predicate the drill-down lists the cases of.
    totals: Counter = field(default_factory=Counter)
    by_quarter: Counter = field(default_factory=Counter)  # (authority, first day of quarter) -> notifications
    # authority -> notifications, incomplete (categorisation) and each gap's count
    categorisation: dict[str, Counter] = field(default_factory=dict)


# The sums kept for each review type, over the reviews received in the period.
REVIEW_SUMS = (
    "reviews", "signed_off_senior", "reviewer_independent", "risk_assessment_completed",
    "risk_assessment_up_to_date", "risk_management_plan_in_place", "risk_management_plan_informed",
    "order_reviews_referenced", "good_practice_identified", "in_time", "with_info_requests", "info_requests",
    "risk_management_plan_not_in_place",
)
# ... and over the responses given in the period, by the type of review answered.
RESPONSE_SUMS = (
    "responses", "in_time", "concluded", "comprehensive_required", "iar_judged", "iar_appropriate",
    "quality_judged", "high_quality",
)


@dataclass
class ReviewCounts:
    by_type: dict[str, Counter] = field(default_factory=dict)  # review type -> REVIEW_SUMS
    responses_by_type: dict[str, Counter] = field(default_factory=dict)  # review type -> RESPONSE_SUMS
    findings: Counter = field(default_factory=Counter)
    risk_tools: Counter = field(default_factory=Counter)
    findings_over_time: list[tuple[str, int, str, int]] = field(default_factory=list)  # (authority, year, finding, reviews)

    def total(self, name: str) -> int:
        return sum(c[name] for c in self.by_type.values())

    def of(self, review_type: str, name: str) -> int:
        return self.by_type.get(review_type, Counter())[name]

    def response_total(self, name: str) -> int:
        return sum(c[name] for c in self.responses_by_type.values())

    def response_of(self, review_type: str, name: str) -> int:
        return self.responses_by_type.get(review_type, Counter())[name]


@dataclass
class QuarterCounts:
    """The quarterly report's additions, by local authority."""

    open_cases: Counter = field(default_factory=Counter)
    overdue_items: Counter = field(default_factory=Counter)
    breaches: Counter = field(default_factory=Counter)
    breaches_by_rule: Counter = field(default_factory=Counter)


def _table(title: str, columns: list[str], rows: list[list], base: int | None = None,
           keys: list[str] | None = None) -> dict:
    """A table; `base` is what a share table's percentages are of (its second column's
    counts out of `base`), so a page can show the exact share and round it once; `keys`:
    each row's value (a vocabulary value, an authority's slug, a figure's id), which the
    drill-down takes (`value=`)."""
    table: dict[str, object] = {"title": title, "columns": columns, "rows": rows}
    if base is not None:
        table["base"] = base
    return table if keys is None else table | {"keys": keys}


def mappa_key(category: int | None, level: int | None) -> str:
    """A row of the MAPPA table as the drill-down names it ("1-2"; "-2" without category)."""
    return f"{'' if category is None else category}-{'' if level is None else level}"


def _share_rows(counts: Mapping[str, int], vocabulary: str, total: int) -> list[list]:
    """One row per value of the vocabulary, in its order, worded by the label file."""
    return [
        [label(vocabulary, k), counts.get(k, 0), percent(counts.get(k, 0), total)] for k in VOCABULARIES[vocabulary]
    ]


def period_state(period_to: dt.date, generated_at: dt.datetime) -> tuple[dt.datetime, bool]:
    """The moment a report's figures run to, and whether its period has ended: a period
    still running is counted as at the moment the report is made, never beyond it."""
    end = end_of_day(period_to)
    return (end, True) if generated_at >= end else (generated_at, False)


def by_authority_order(counts: Mapping[str, int]) -> list[tuple[str, Any]]:
    """The authorities, most notifications first; ties in the reference data's order of
    names (alphabetical), so the same figures always give the same table."""
    return sorted(LOCAL_AUTHORITIES.items(), key=lambda item: (-counts.get(item[0], 0), item[1].name))


def notification_figures(n: NotificationCounts) -> dict[str, Any]:
    # Late: more working days taken than the limit (the one verdict, stored per notification).
    late = {days: count for days, count in n.working_days.items() if late_by(days, NOTIFICATION_WORKING_DAYS)}
    t = n.totals
    return {
        "notifications": n.total,
        "authorities_notifying": sum(1 for count in n.by_authority.values() if count),
        "notifications_meeting_criteria": ratio(t["meets_criteria"], n.total),
        "notifications_not_meeting_criteria": ratio(t["criteria_not_met"], n.total),
        "notified_within_5_working_days": ratio(t["in_time"], n.total),
        "notified_late": ratio(t["late"], n.total),
        "late_notification_working_days": statistics(late),
        "forwarded_to_sg_within_2_working_days": ratio(t["sg_forwarded_in_time"], t["sg_forward_judged"]),
        "forwarded_to_sg": ratio(t["sg_forwarded"], n.total),
        "notifications_signed_off_by_service_manager_or_above": ratio(t["signed_off_senior"], n.total),
        "notifications_domestic_abuse_aggravated": ratio(t["domestic_abuse_aggravated"], n.total),
        "notifications_mappa": ratio(t["mappa"], n.total),
        "notifications_historical": ratio(t["historical"], n.total),
        "notifications_with_incomplete_categorisation": ratio(t["categorisation_incomplete"], n.total),
    }


def review_figures(r: ReviewCounts) -> dict[str, Any]:
    reviews = r.total("reviews")
    plans = r.total("risk_management_plan_in_place")
    iar, comprehensive = "initial_analysis", "comprehensive"
    figures: dict[str, Any] = {"reviews": reviews}
    for review_type in VOCABULARIES["review_type"]:
        figures[f"{review_type}_reviews"] = ratio(r.of(review_type, "reviews"), reviews)
    figures |= {
        "reviews_within_3_months": ratio(r.total("in_time"), reviews),
        "reviews_signed_off_by_head_of_service_or_cswo": ratio(r.total("signed_off_senior"), reviews),
        "reviews_risk_assessment_completed": ratio(r.total("risk_assessment_completed"), reviews),
        "reviews_risk_assessment_up_to_date": ratio(r.total("risk_assessment_up_to_date"), reviews),
        "reviews_risk_management_plan_in_place": ratio(plans, reviews),
        "reviews_risk_management_plan_not_referenced": ratio(r.total("risk_management_plan_not_in_place"), reviews),
        "risk_management_plans_informed_by_assessment": ratio(r.total("risk_management_plan_informed"), plans),
        "reviews_order_reviews_referenced": ratio(r.total("order_reviews_referenced"), reviews),
        "reviews_reviewer_independent": ratio(r.total("reviewer_independent"), reviews),
        "reviews_good_practice_identified": ratio(r.total("good_practice_identified"), reviews),
        "additional_info_requests": r.total("info_requests"),
        "reviews_with_additional_info_requested": ratio(r.total("with_info_requests"), reviews),
        "initial_analysis_reviews_with_additional_info_requested": ratio(
            r.of(iar, "with_info_requests"), r.of(iar, "reviews")
        ),
        "comprehensive_reviews_with_additional_info_requested": ratio(
            r.of(comprehensive, "with_info_requests"), r.of(comprehensive, "reviews")
        ),
        "inspectorate_responses": r.response_total("responses"),
        "inspectorate_responses_within_1_month": ratio(r.response_total("in_time"), r.response_total("responses")),
        "initial_analysis_decisions_appropriate": ratio(
            r.response_of(iar, "iar_appropriate"), r.response_of(iar, "iar_judged")
        ),
        "initial_analysis_comprehensive_review_required": ratio(
            r.response_of(iar, "comprehensive_required"), r.response_of(iar, "responses")
        ),
        "comprehensive_reviews_high_quality": ratio(
            r.response_of(comprehensive, "high_quality"), r.response_of(comprehensive, "quality_judged")
        ),
    }
    return figures


def patterns_table(national: Mapping[str, Any], patterns: list) -> dict:
    """The under-reporting signal (services/reporting/patterns.py): flagged authorities
    first, then those with most quarters without a notification."""
    ordered = sorted(patterns, key=lambda p: (
        not p.flagged, -p.quarters_with_none, -p.longest_run_with_none, LOCAL_AUTHORITIES[p.local_authority].name
    ))
    rate = national.get("rate_per_1000")
    return _table(
        "Reporting patterns: quarters without a notification and the rate per 1,000 supervised"
        + (f" (Scotland: {rate} per 1,000)" if rate is not None else ""),
        ["local authority", "notifications", "quarters", "quarters with none", "longest run of quarters with none",
         "rate per 1,000 supervised", "expected at the national rate", "p value", "improbably low"],
        [[LOCAL_AUTHORITIES[p.local_authority].name, p.notifications, p.quarters, p.quarters_with_none,
          p.longest_run_with_none, p.rate_per_1000, p.expected, p.p_value, "yes" if p.flagged else ""]
         for p in ordered],
        keys=[p.local_authority for p in ordered],
    )


def categorisation_table(by_authority: Mapping[str, Counter]) -> dict:
    """Notifications with incomplete categorisation, by authority (those with any first)."""
    ordered = sorted(LOCAL_AUTHORITIES.items(), key=lambda item: (
        -by_authority.get(item[0], Counter())["incomplete"], -by_authority.get(item[0], Counter())["notifications"],
        item[1].name,
    ))
    return _table(
        "Notifications with incomplete categorisation, by local authority",
        ["local authority", "with incomplete categorisation", "notifications",
         *(f"missing: {gap}" for gap in categorisation.GAPS)],
        [[la.name, by_authority.get(slug, Counter())["incomplete"], by_authority.get(slug, Counter())["notifications"],
          *(by_authority.get(slug, Counter())[gap] for gap in categorisation.GAPS)] for slug, la in ordered],
        keys=[slug for slug, _ in ordered],
    )


TOP_THEMES = 5


def learning_theme_tables(rows: list[tuple[str, int, str, int]]) -> dict[str, dict]:
    """The review findings (learning themes) by year and by authority, and the five most
    frequent themes year by year (charted). `rows`: (authority, year, finding, reviews)."""
    by_year: dict[str, Counter] = {f: Counter() for f in VOCABULARIES["finding"]}
    by_authority: dict[str, Counter] = {slug: Counter() for slug in LOCAL_AUTHORITIES}
    for authority, year, finding, reviews in rows:
        by_year[finding][year] += reviews
        by_authority[authority][finding] += reviews
    years = sorted({year for _, year, _, _ in rows})
    totals = Counter({f: sum(c.values()) for f, c in by_year.items()})
    # The most frequent first; ties in the vocabulary's order (the same figures, the same chart).
    order = {f: i for i, f in enumerate(VOCABULARIES["finding"])}
    top = sorted((f for f in totals if totals[f]), key=lambda f: (-totals[f], order[f]))[:TOP_THEMES]
    findings = list(VOCABULARIES["finding"])
    return {
        "review_findings_by_year": _table(
            "Learning themes the reviews identify, by year the review was received", ["finding", *map(str, years), "total"],
            [[label("finding", f), *(by_year[f][y] for y in years), totals[f]] for f in findings],
            keys=findings,
        ),
        "review_findings_by_authority": _table(
            "Learning themes the reviews identify, by local authority",
            ["local authority", *(label("finding", f) for f in findings), "total"],
            [[la.name, *(by_authority[slug][f] for f in findings), sum(by_authority[slug].values())]
             for slug, la in LOCAL_AUTHORITIES.items()],
            keys=list(LOCAL_AUTHORITIES),
        ),
        "top_learning_themes_over_time": _table(
            f"The {TOP_THEMES} most frequent learning themes, year by year",
            ["theme and year", "reviews"],
            [[f"{label('finding', f)}, {y}", by_year[f][y]] for f in top for y in years],
        ),
    }


def follow_up_table(rows: list[tuple[str, str | None, dt.date, tuple[str, ...]]]) -> dict:
    """The quarter's notifications with incomplete categorisation, for the councils to complete."""
    return _table(
        "Notifications to follow up: categorisation missing or vague",
        ["local authority", "council reference", "notified on", "missing or vague"],
        [[LOCAL_AUTHORITIES[la].name, reference, on.isoformat(), ", ".join(gaps)] for la, reference, on, gaps in rows],
    )


def national_report(
    period_from: dt.date, period_to: dt.date, generated_at: dt.datetime,
    n: NotificationCounts, r: ReviewCounts, kind: str = "national", extra_tables: Mapping[str, dict] | None = None,
) -> dict:
    """The report's JSON shape (docs/reports.md, docs/report.schema.json)."""
    figures = notification_figures(n) | review_figures(r)
    authorities = by_authority_order(n.by_authority)
    timeliness = [  # in the order of TIMELINESS_FIGURES
        ("Notified within 5 working days", figures["notified_within_5_working_days"]),
        ("Forwarded to the Scottish Government within 2 working days", figures["forwarded_to_sg_within_2_working_days"]),
        ("Inspectorate responses within 1 month", figures["inspectorate_responses_within_1_month"]),
        ("Reviews within 3 months", figures["reviews_within_3_months"]),
    ]
    reviews = figures["reviews"]
    mappa_rows = sorted(n.by_mappa, key=lambda key: tuple((v is None, v or 0) for v in key))
    tables = {
        "notifications_by_authority": _table(
            "Notifications by local authority",
            ["local authority", "notifications", "percent"],
            [[la.name, n.by_authority[slug], percent(n.by_authority[slug], n.total)] for slug, la in authorities],
            base=n.total, keys=[slug for slug, _ in authorities],
        ),
        "notifications_by_incident_type": _table(
            "Notifications by incident type", ["incident type", "notifications", "percent"],
            _share_rows(n.by_incident_type, "incident_type", n.total),
            base=n.total, keys=list(VOCABULARIES["incident_type"]),
        ),
        "timeliness": _table(
            "Timeliness", ["measure", "count", "base", "percent"],
            [[name, f["count"], f["base"], f["percent"]] for name, f in timeliness],
            keys=list(TIMELINESS_FIGURES),
        ),
        "notifications_by_criterion": _table(
            "Notifications by criterion", ["criterion", "notifications", "percent"],
            _share_rows(n.by_criterion, "criterion", n.total),
            base=n.total, keys=list(VOCABULARIES["criterion"]),
        ),
        "notifications_by_order_type": _table(
            "Notifications by order or licence", ["order type", "notifications", "percent"],
            _share_rows(n.by_order_type, "order_type", n.total),
            base=n.total, keys=list(VOCABULARIES["order_type"]),
        ),
        "notifications_by_sign_off": _table(
            "Notifications by who signed them off", ["signed off by", "notifications", "percent"],
            _share_rows(n.by_sign_off, "sign_off_role", n.total),
            base=n.total, keys=list(VOCABULARIES["sign_off_role"]),
        ),
        "notifications_by_mappa": _table(
            "Notifications where MAPPA applies, by category and level", ["category", "level", "notifications"],
            [[category, level, n.by_mappa[category, level]] for category, level in mappa_rows],
            keys=[mappa_key(category, level) for category, level in mappa_rows],
        ),
        "reviews_by_type": _table(
            "Reviews received by type", ["review type", "reviews", "percent"],
            _share_rows({t: r.of(t, "reviews") for t in VOCABULARIES["review_type"]}, "review_type", reviews),
            base=reviews, keys=list(VOCABULARIES["review_type"]),
        ),
        "review_findings": _table(
            "Learning themes the reviews identify", ["finding", "reviews", "percent"],
            _share_rows(r.findings, "finding", reviews),
            base=reviews, keys=list(VOCABULARIES["finding"]),
        ),
        "risk_tools": _table(
            "Risk assessment tools the reviews refer to", ["tool", "reviews", "percent"],
            _share_rows(r.risk_tools, "risk_tool", reviews),
            base=reviews, keys=list(VOCABULARIES["risk_tool"]),
        ),
    }
    tables |= extra_tables or {}
    as_at, complete = period_state(period_to, generated_at)
    return {
        "report": kind,
        "period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
        "generated_at": generated_at.isoformat(),
        "as_at": as_at.isoformat(),
        "complete": complete,
        "figures": figures,
        "tables": tables,
    }


def quarter_period(year: int, quarter: int) -> tuple[dt.date, dt.date]:
    """First and last day of quarter 1-4 of `year`."""
    if not 1 <= quarter <= 4:
        raise ValueError("the quarter is 1, 2, 3 or 4")
    first = dt.date(year, 3 * quarter - 2, 1)
    return first, add_months(first, 3) - dt.timedelta(days=1)


def quarterly_report(
    year: int, quarter: int, generated_at: dt.datetime,
    n: NotificationCounts, r: ReviewCounts, q: QuarterCounts, extra_tables: Mapping[str, dict] | None = None,
) -> dict:
    period_from, period_to = quarter_period(year, quarter)
    report = national_report(period_from, period_to, generated_at, n, r, kind="quarterly", extra_tables=extra_tables)
    report["figures"] |= {
        # At the quarter's end, or at `as_at` while it is still running.
        "open_cases_at_quarter_end": sum(q.open_cases.values()),
        "overdue_items_at_quarter_end": sum(q.overdue_items.values()),
        "deadlines_breached": sum(q.breaches.values()),
    }
    report["tables"]["by_authority"] = _table(
        "Notifications, open cases, overdue items and breaches by local authority",
        ["local authority", "notifications", "open cases", "overdue items", "breaches"],
        [
            [la.name, n.by_authority[slug], q.open_cases[slug], q.overdue_items[slug], q.breaches[slug]]
            for slug, la in by_authority_order(n.by_authority)
        ],
    )
    report["tables"]["breaches_by_rule"] = _table(
        "Deadlines breached in the quarter, by rule", ["rule", "breaches"],
        [[label("rule", rule), count] for rule, count in sorted(q.breaches_by_rule.items())],
    )
    return report


# --- the report's JSON shape (published as docs/report.schema.json) -------------------


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ratio(_Shape):
    """A share: `count` of `base`, `percent` = 100 × count / base to one decimal (None when base is 0)."""

    count: int
    base: int
    percent: float | None


class Statistics(_Shape):
    """Of a list of whole numbers (e.g. working days taken): None when the list is empty."""

    min: int | None
    max: int | None
    median: float | None
    mean: float | None


class Table(_Shape):
    title: str
    columns: list[str]
    rows: list[list[str | int | float | None]]
    base: int | None = Field(None, description="What a share table's percentages are of: its second column out of this")
    keys: list[str] | None = Field(
        None, description="Each row's value (vocabulary value, authority slug or figure id): the drill-down's `value`"
    )


class Period(_Shape):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: dt.date = Field(alias="from", description="First day (Scottish date), included")
    to: dt.date = Field(description="Last day (Scottish date), included")


class Report(_Shape):
    """A national or quarterly report (docs/reports.md names every figure and its rule)."""

    report: Literal["national", "quarterly"]
    period: Period
    generated_at: dt.datetime = Field(description="The database clock when the figures were read")
    as_at: dt.datetime = Field(
        description="The moment the figures run to: the end of the period's last day (Europe/London) once it"
        " has ended, else generated_at (nothing not yet due by then counts as breached or overdue)"
    )
    complete: bool = Field(description="Whether the period had ended when the report was made")
    as_of: dt.datetime | None = Field(
        None, description="Only events recorded (recorded_at) by this moment count: the report as known then"
        " (generated_at: as known when made)"
    )
    basis: Literal["received", "cohort"] | None = Field(
        None, description="received: the reviews and responses received in the period; cohort: those of the"
        " period's notifications, whenever they came"
    )
    figures: dict[str, int | Ratio | Statistics]
    tables: dict[str, Table]


def report_schema() -> dict:
    return Report.model_json_schema(by_alias=True)
