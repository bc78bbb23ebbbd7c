"""Deadline rules, pure: the rules file (`rules.toml`), which events start, meet and
cancel which deadlines, due and warning times, lateness, the deadline events, and
`decide`, the consumer's decider (a case's deadlines and one event → the deadlines after
it and the events it emits).

Everything here is a function of its arguments; the shell (shared/process.py, with
repository.load_cases / save_cases) and the scheduler do the I/O.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import tomllib
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import Any

from pydantic import AwareDatetime, BaseModel

from shared.calendar import LONDON, Timescale, Verdict, judge, local_date
from shared.decider import Context, Decision
from shared.events import (
    CASE_EVENT_TYPES,
    DEADLINE_EVENT_TYPES,
    ROUTING_EVENT_TYPES,
    Actor,
    DeadlineData,
    DeadlineRule,
    Envelope,
    event_type_of,
)
from shared.lifecycle import case_after
from shared.topics import topic_of

OWNERS = ("council", "inspectorate")
SOURCES = ("guidance", "assumed")
# Deadline events name their rule; the event schema knows the rule names.
RULE_NAMES: tuple[str, ...] = typing.get_args(DeadlineRule)
EVENT_MODELS: dict[str, type[Envelope]] = {
    event_type_of(model): model for model in CASE_EVENT_TYPES + ROUTING_EVENT_TYPES
}
DEADLINE_MODELS: dict[str, type[Envelope]] = {event_type_of(m).split(".", 1)[1]: m for m in DEADLINE_EVENT_TYPES}
ACTOR = Actor(role="service", id="deadlines")
# Deadline events' ids are uuid5 of (case, rule, sequence, kind) in this namespace, so
# the same fact always has the same id and a duplicate is recognisable downstream.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:sir:deadlines")


class RulesError(ValueError):
    """The rules file is not valid; the message names the rule and the field."""


# --- matching events ------------------------------------------------------------------


def _value_at(event: Any, path: str) -> Any:
    value = event
    for name in path.split("."):
        value = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
        if value is None:
            return None
    return value


def _satisfies(value: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        return isinstance(value, str) and fnmatch.fnmatchcase(value, expected)
    # bool is an int in Python: compare types too, so `true` never equals 1.
    return type(value) is type(expected) and value == expected


def as_moment(value: dt.datetime | dt.date) -> dt.datetime:
    """A timestamp, or a date taken as the start of that day in Scotland."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time(), LONDON).astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class Trigger:
    """An event type, conditions on the event, and the field giving its moment."""

    event: str
    when: tuple[tuple[str, Any], ...] = ()
    at: str = "received_at"

    def matches(self, event: Envelope) -> bool:
        return event.event_type == self.event and all(
            _satisfies(_value_at(event, path), expected) for path, expected in self.when
        )

    def moment(self, event: Envelope) -> dt.datetime:
        return as_moment(_value_at(event, self.at))


# --- rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    owner: str
    source: str  # "guidance" or "assumed"
    working_days: int | None
    months: int | None
    warning_working_days: int
    start: Trigger
    stop: Trigger

    @property
    def limit(self) -> str:
        return f"{self.working_days} working days" if self.working_days else f"{self.months} calendar months"

    @property
    def timescale(self) -> Timescale:
        return Timescale(self.working_days, self.months, self.warning_working_days)

    def verdict(self, started_at: dt.datetime, stopped_at: dt.datetime | None = None) -> Verdict:
        """The one verdict (shared.calendar.judge): due and warning times, and, given the
        stop, met in time or late, working days taken and late."""
        return judge(started_at, self.timescale, stopped_at)

    def due_at(self, started_at: dt.datetime) -> dt.datetime:
        """The breach moment: for working days when the next working day after the last
        one allowed begins; for calendar months the end of the last day."""
        return self.verdict(started_at).due_at

    def warn_at(self, started_at: dt.datetime) -> dt.datetime | None:
        """`warning_working_days` working days before the breach moment (None: no warning)."""
        return self.verdict(started_at).warn_at

    @property
    def stop_may_come_first(self) -> bool:
        """Start and stop travel on different topics, whose order is not kept: a stop
        may arrive before the start it settles and must then be kept for it."""
        return topic_of(self.stop.event) != topic_of(self.start.event)

    @property
    def settles_at_once(self) -> bool:
        """The start event is also the stop (`notification`: judged on arrival)."""
        return self.start.event == self.stop.event


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    cancel: tuple[Trigger, ...]

    def __getitem__(self, name: str) -> Rule:
        return next(rule for rule in self.rules if rule.name == name)

    def stopped_by(self, event: Envelope) -> list[Rule]:
        return [rule for rule in self.rules if rule.stop.matches(event) and not rule.settles_at_once]

    def started_by(self, event: Envelope) -> list[Rule]:
        return [rule for rule in self.rules if rule.start.matches(event)]

    def cancels(self, event: Envelope) -> bool:
        return any(trigger.matches(event) for trigger in self.cancel)


def due_date(due_at: dt.datetime) -> dt.date:
    """The last day of a deadline that falls due at the end of it."""
    return local_date(due_at - dt.timedelta(microseconds=1))


def working_days_late(rule: str, started_at: dt.datetime, met_at: dt.datetime) -> int:
    """The one verdict's working days late of a deadline of `rule` met at `met_at`."""
    late = RULES[rule].verdict(started_at, met_at).working_days_late
    assert late is not None  # judged with its stop, a verdict always says how late
    return late


def is_watched(due_at: dt.datetime, opened_by: Envelope, imported: bool) -> bool:
    """Whether the scheduler warns and breaches this deadline. A live one is, unless its
    due time had passed when the opening event was recorded (`notification`, judged on
    arrival). An imported one always is: still open when its history has been applied, it
    is warned and breached like a live one if its due time is ahead, and breached at once
    if it has passed (`settle_until` keeps the scheduler off while that history arrives)."""
    return imported or due_at > opened_by.recorded_at


def first_fire_at(
    due_at: dt.datetime, warn_at: dt.datetime | None, recorded_at: dt.datetime, settle_until: dt.datetime | None = None
) -> dt.datetime:
    """When the scheduler first looks at a watched deadline: its warning, unless that
    moment had already passed when the deadline opened; else its due time. Never before
    `settle_until` (imported history: the rest of the case's history may still come)."""
    first = warn_at if warn_at is not None and warn_at > recorded_at else due_at
    return first if settle_until is None else max(first, settle_until)


# --- the deadline events --------------------------------------------------------------


def event_id(case_id: uuid.UUID, rule: str, sequence: int, kind: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{case_id}/{rule}/{sequence}/{kind}")


def deadline_event(
    kind: str,
    row: Mapping[str, Any],
    *,
    received_at: dt.datetime,
    recorded_at: dt.datetime,
    met_at: dt.datetime | None = None,
    breached_at: dt.datetime | None = None,
    working_days_late: int | None = None,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    """`deadline.<kind>` of a deadline (a row, or a mapping with its keys: case_id,
    local_authority, rule, sequence, started_at, due_at); received_at is the moment that
    caused it (the start, the stop, the warning or due time, the closing), causation_id
    the event that did (a warning's or breach's: the deadline's `deadline.opened`)."""
    # DEADLINE_MODELS maps to Envelope subclasses, each with its `data` model.
    return DEADLINE_MODELS[kind](
        event_id=event_id(row["case_id"], row["rule"], row["sequence"], kind),
        event_type=f"deadline.{kind}",
        case_id=row["case_id"],
        local_authority=row["local_authority"],
        received_at=received_at,
        recorded_at=recorded_at,
        actor=ACTOR,
        causation_id=causation_id,
        data=DeadlineData(
            rule=row["rule"], started_at=row["started_at"], due_at=row["due_at"], met_at=met_at,
            breached_at=breached_at, working_days_late=working_days_late,
        ),
    )


# --- reading and checking the rules file ----------------------------------------------


def _base_types(annotation: Any) -> list[Any]:
    """The types an annotation allows, through Optional, unions and Annotated."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _base_types(typing.get_args(annotation)[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [t for arg in typing.get_args(annotation) for t in _base_types(arg)]
    return [annotation]


def _field_type(model: type[BaseModel], path: str) -> list[Any]:
    """The types at a dotted path of an event model, or RulesError."""
    allowed: list[Any] = [model]
    for name in path.split("."):
        model_of = next((t for t in allowed if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if model_of is None or name not in model_of.model_fields:
            raise RulesError(f"{model.__name__} has no field {path!r}")
        allowed = _base_types(model_of.model_fields[name].annotation)
    return allowed


def _trigger(where: str, table: Any) -> Trigger:
    if not isinstance(table, Mapping) or set(table) - {"event", "when", "at"} or "event" not in table:
        raise RulesError(f"{where}: expected {{event = TYPE, when = {{...}}, at = FIELD}}, got {table!r}")
    model = EVENT_MODELS.get(table["event"])
    if model is None:
        raise RulesError(f"{where}: unknown event type {table['event']!r}")
    when = table.get("when", {})
    if not isinstance(when, Mapping):
        raise RulesError(f"{where}.when: expected a table of conditions")
    try:
        for path in when:
            _field_type(model, path)
        at = table.get("at", "received_at")
        at_types = _field_type(model, at)
    except RulesError as error:
        raise RulesError(f"{where}: {error}") from None
    if not any(isinstance(t, type) and issubclass(t, (dt.date, AwareDatetime)) for t in at_types):
        raise RulesError(f"{where}.at: {at!r} is not a date or a timestamp")
    return Trigger(table["event"], tuple(when.items()), at)


def _positive(where: str, value: Any, zero_ok: bool = False) -> int:
    if type(value) is not int or value < (0 if zero_ok else 1):
        raise RulesError(f"{where}: expected a {'non-negative' if zero_ok else 'positive'} whole number, got {value!r}")
    return value


def _rule(name: str, table: Mapping, defaults: Mapping) -> Rule:
    where = f"rules.{name}"
    known = {"owner", "source", "limit", "warning_working_days", "start", "stop"}
    if unknown := set(table) - known:
        raise RulesError(f"{where}: unknown fields {sorted(unknown)}")
    if missing := {"owner", "source", "limit", "start", "stop"} - set(table):
        raise RulesError(f"{where}: missing {sorted(missing)}")
    if table["owner"] not in OWNERS:
        raise RulesError(f"{where}.owner: expected one of {OWNERS}, got {table['owner']!r}")
    if table["source"] not in SOURCES:
        raise RulesError(f"{where}.source: expected one of {SOURCES}, got {table['source']!r}")
    limit = table["limit"]
    if not isinstance(limit, Mapping) or len(limit) != 1 or set(limit) - {"working_days", "months"}:
        raise RulesError(f"{where}.limit: expected {{working_days = N}} or {{months = N}}, got {limit!r}")
    (unit, amount), = limit.items()
    amount = _positive(f"{where}.limit.{unit}", amount)
    warning = table.get("warning_working_days", defaults.get("warning_working_days", 1))
    return Rule(
        name=name,
        owner=table["owner"],
        source=table["source"],
        working_days=amount if unit == "working_days" else None,
        months=amount if unit == "months" else None,
        warning_working_days=_positive(f"{where}.warning_working_days", warning, zero_ok=True),
        start=_trigger(f"{where}.start", table["start"]),
        stop=_trigger(f"{where}.stop", table["stop"]),
    )


def parse_rules(text: str) -> Rules:
    """Read and check a rules file (TOML); every rule of the event schema must be there."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"rules file is not valid TOML: {error}") from None
    if unknown := set(document) - {"defaults", "rules", "cancel"}:
        raise RulesError(f"unknown sections {sorted(unknown)}")
    tables = document.get("rules", {})
    if missing := set(RULE_NAMES) - set(tables):
        raise RulesError(f"rules missing: {sorted(missing)}")
    if unknown := set(tables) - set(RULE_NAMES):
        raise RulesError(f"unknown rules {sorted(unknown)} (deadline events know {', '.join(RULE_NAMES)})")
    defaults = document.get("defaults", {})
    rules = tuple(_rule(name, tables[name], defaults) for name in RULE_NAMES)
    cancel = tuple(_trigger(f"cancel[{i}]", table) for i, table in enumerate(document.get("cancel", [])))
    return Rules(rules, cancel)


RULES = parse_rules((files("services.deadlines") / "rules.toml").read_text(encoding="utf-8"))


# --- the decider: a case's deadlines and one event ------------------------------------
#
# For each event, in this order: the stops it makes (meeting the oldest unmet deadline of
# each rule it stops, or keeping the stop for a start still to come), the starts (a new
# deadline per rule it starts; one the same event also stops, `notification`, is judged
# at once; one whose stop came first is met by it), then a closing cancels what is open.
# Every moment comes from the events' own timestamps, so history settles as it happened;
# the deadline events are recorded at the context's `now` (the transaction's time).

UNMET = ("open", "breached")  # a stop meets the oldest of its rule in one of these


@dataclass(frozen=True)
class CaseRow:
    """What the API needs of a case to answer who may read it (set by its notification)."""

    local_authority: str
    sog_region: str | None


@dataclass(frozen=True)
class Deadline:
    """One deadline of a case, with the columns the decider reads or writes. The
    scheduler's own (warned_at, breached_at) are not here: the decider never writes them;
    it reads the status the scheduler left (`breached`) and next_fire_at."""

    rule: str
    sequence: int
    local_authority: str
    status: str  # open, met, breached, cancelled
    watched: bool
    imported: bool
    started_at: dt.datetime
    due_at: dt.datetime
    warn_at: dt.datetime | None
    next_fire_at: dt.datetime | None
    opened_by: uuid.UUID
    met_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    working_days_late: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.rule, self.sequence)


@dataclass(frozen=True)
class EarlyStop:
    """A stop that came before its start (another topic), kept until the deadline opens."""

    rule: str
    event_id: uuid.UUID
    stopped_at: dt.datetime
    imported: bool

    @property
    def key(self) -> tuple[str, uuid.UUID]:
        return (self.rule, self.event_id)


@dataclass(frozen=True)
class CaseDeadlines:
    """The state deadlines keeps for one case: its row (once notified), its deadlines in
    the order they were opened, and the stops kept for deadlines not yet opened. The
    import hold lives in the deadlines' `next_fire_at` (never before `settle_until`)."""

    case_id: uuid.UUID
    case: CaseRow | None = None
    deadlines: tuple[Deadline, ...] = ()
    early_stops: tuple[EarlyStop, ...] = ()


def wants(event: Any) -> bool:
    """Whether `decide` may act on the event (the others are only marked processed)."""
    return bool(
        event.event_type == "incident.notified"
        or RULES.stopped_by(event) or RULES.started_by(event) or RULES.cancels(event)
    )


def decide(
    state: CaseDeadlines, event: Envelope, context: Context, *, settle: dt.timedelta
) -> Decision[CaseDeadlines]:
    """The case's deadlines after `event`, and the deadline events it causes, in order.
    `settle` (Settings.import_settle_seconds, bound when the process is built): how long
    an imported event keeps the scheduler off its case's deadlines, as more of its history
    may follow (each later imported event of the case pushes the hold on)."""
    if not wants(event):
        return Decision(state)
    work = _Work(state, event, context)
    if context.imported:
        work.settle_until = context.now + settle
        work.hold(work.settle_until)
    if event.event_type == "incident.notified" and work.case is None:
        work.case = CaseRow(event.local_authority, case_after(None, event).sog_region)
    for rule in RULES.stopped_by(event):
        work.stop(rule)
    for rule in RULES.started_by(event):
        work.start(rule)
    if RULES.cancels(event):
        work.cancel_open()
    after = CaseDeadlines(state.case_id, work.case, tuple(work.deadlines), tuple(work.early_stops))
    if after == state:
        return Decision(state, tuple(work.emitted))
    return Decision(after, tuple(work.emitted))


def deadline_row(case_id: uuid.UUID, deadline: Deadline) -> dict[str, Any]:
    """The keys `deadline_event` reads, of a deadline of the case."""
    return {
        "case_id": case_id, "local_authority": deadline.local_authority, "rule": deadline.rule,
        "sequence": deadline.sequence, "started_at": deadline.started_at, "due_at": deadline.due_at,
    }


class _Work:
    """One decision under way: a working copy of the case's state (the decider's own;
    `decide` returns a new frozen state) and the events emitted so far."""

    def __init__(self, state: CaseDeadlines, event: Envelope, context: Context):
        self.case_id, self.event, self.context = state.case_id, event, context
        self.case = state.case
        self.deadlines = list(state.deadlines)
        self.early_stops = list(state.early_stops)
        self.settle_until: dt.datetime | None = None
        self.emitted: list[Envelope] = []

    def emit(self, kind: str, deadline: Deadline, received_at: dt.datetime, **data: Any) -> None:
        self.emitted.append(deadline_event(
            kind, deadline_row(self.case_id, deadline), received_at=received_at,
            recorded_at=self.context.now, causation_id=self.event.event_id, **data,
        ))

    def hold(self, until: dt.datetime) -> None:
        """Keep the scheduler off the case's watched imported deadlines until `until`."""
        self.deadlines = [
            replace(d, next_fire_at=max(d.next_fire_at, until))
            if d.imported and d.next_fire_at is not None and d.next_fire_at < until else d
            for d in self.deadlines
        ]

    def stop(self, rule: Rule) -> None:
        stopped_at = rule.stop.moment(self.event)
        unmet = [i for i, d in enumerate(self.deadlines) if d.rule == rule.name and d.status in UNMET]
        if unmet:
            self.meet(min(unmet, key=lambda i: self.deadlines[i].sequence), stopped_at)
        elif rule.stop_may_come_first and not any(d.rule == rule.name for d in self.deadlines):
            kept = EarlyStop(rule.name, self.event.event_id, stopped_at, self.context.imported)
            if all(early.key != kept.key for early in self.early_stops):
                self.early_stops.append(kept)

    def start(self, rule: Rule) -> None:
        started_at = rule.start.moment(self.event)
        verdict = rule.verdict(started_at)
        watched = is_watched(verdict.due_at, self.event, self.context.imported)
        opened = Deadline(
            rule=rule.name,
            sequence=max((d.sequence for d in self.deadlines if d.rule == rule.name), default=0) + 1,
            local_authority=self.event.local_authority, status="open", watched=watched,
            imported=self.context.imported, started_at=started_at, due_at=verdict.due_at, warn_at=verdict.warn_at,
            next_fire_at=(
                first_fire_at(verdict.due_at, verdict.warn_at, self.event.recorded_at, self.settle_until)
                if watched else None
            ),
            opened_by=self.event.event_id,
        )
        self.deadlines.append(opened)
        self.emit("opened", opened, started_at)
        stopped_at = None
        if rule.settles_at_once:
            stopped_at = rule.stop.moment(self.event)
        elif rule.stop_may_come_first and (early := self.take_early_stop(rule.name)):
            stopped_at = early.stopped_at
        if stopped_at is not None:
            self.meet(len(self.deadlines) - 1, stopped_at)

    def take_early_stop(self, rule: str) -> EarlyStop | None:
        """The earliest kept stop of the rule, removed as it is used."""
        kept = [early for early in self.early_stops if early.rule == rule]
        if not kept:
            return None
        early = min(kept, key=lambda e: (e.stopped_at, str(e.event_id)))
        self.early_stops.remove(early)
        return early

    def meet(self, index: int, met_at: dt.datetime) -> None:
        deadline = self.deadlines[index]
        late = working_days_late(deadline.rule, deadline.started_at, met_at)
        self.deadlines[index] = replace(
            deadline, status="met", met_at=met_at, working_days_late=late, next_fire_at=None
        )
        self.emit("met", deadline, met_at, met_at=met_at, working_days_late=late)

    def cancel_open(self) -> None:
        at = self.event.received_at
        for index, deadline in enumerate(self.deadlines):
            if deadline.status == "open":
                self.deadlines[index] = replace(deadline, status="cancelled", cancelled_at=at, next_fire_at=None)
                self.emit("cancelled", deadline, at)
