"""The one event format of SPEC §3: an envelope and one `data` model per event type.

Every model refuses unknown fields, and every vocabulary comes from the reference data,
so a bad value is refused with its field named. `CaseEvent`, `RoutingEvent`,
`DeadlineEvent` and `AnyEvent` are discriminated unions on `event_type`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.calendar import local_date
from shared.reference import LOCAL_AUTHORITY_SLUGS, MAPPA_REGIONS, VOCABULARIES, mappa_region_of
from shared.settings import get_settings

SCHEMA_VERSION: Final = 1
# incident.notified is at version 2 (domestic_abuse_aggravated may be not known).
NOTIFIED_SCHEMA_VERSION: Final = 2

LocalAuthoritySlug = Literal[LOCAL_AUTHORITY_SLUGS]  # type: ignore[valid-type]
Criterion = Literal[VOCABULARIES["criterion"]]  # type: ignore[valid-type, name-defined]
IncidentType = Literal[VOCABULARIES["incident_type"]]  # type: ignore[valid-type, name-defined]
OrderType = Literal[VOCABULARIES["order_type"]]  # type: ignore[valid-type, name-defined]
SubjectRole = Literal[VOCABULARIES["subject_role"]]  # type: ignore[valid-type, name-defined]
ReviewType = Literal[VOCABULARIES["review_type"]]  # type: ignore[valid-type, name-defined]
SignOffRole = Literal[VOCABULARIES["sign_off_role"]]  # type: ignore[valid-type, name-defined]
RiskTool = Literal[VOCABULARIES["risk_tool"]]  # type: ignore[valid-type, name-defined]
Finding = Literal[VOCABULARIES["finding"]]  # type: ignore[valid-type, name-defined]
# Live events take the role from the token (ROLES), the platform's own services write
# `service`; imported history keeps the role as given (another system may say `system`),
# so any non-empty role is accepted and shown as is (SPEC §3).
ActorRole = Annotated[str, Field(min_length=1, max_length=64, pattern=r"\S")]
Recipient = Annotated[
    str,
    Field(pattern="^(scottish-government|sog:(" + "|".join(MAPPA_REGIONS) + "))$"),
]
DeadlineRule = Literal[
    "notification",
    "sg_forward",
    "sog_forward",
    "review_submission",
    "comprehensive_review",
    "inspectorate_response",
    "additional_info",
]


def _storable(text: str) -> str:
    """JSON allows a NUL and a lone surrogate in a string; PostgreSQL and UTF-8 do not."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


def _distinct(values: list) -> list:
    # A value listed twice is one value (history has such lists; reports count it once).
    return list(dict.fromkeys(values))


# Text fields: `Annotated[str, Field(min_length=1, max_length=N), STORABLE]`, a string of
# 1 to N characters that the store can hold. Lists of choices: `Annotated[list[Vocabulary],
# Field(max_length=size), DISTINCT]`, repeats kept once. Written out in each annotation
# (not built by a function) so that type checkers can read them.
STORABLE = AfterValidator(_storable)
DISTINCT = AfterValidator(_distinct)

# Free text fields are short and must hold no personal data (SPEC §3).
ShortText = Annotated[str, Field(min_length=1, max_length=200), STORABLE]


def field_error(loc: tuple[str, ...], value: object, message: str) -> ValidationError:
    """A refusal located at a field, for a rule that spans several fields. Raised inside
    a validator, a ValidationError passes through as it is (a ValueError would be located
    at the model), so the API's 422 and the import report name the field."""
    return ValidationError.from_exception_data(
        "event", [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=str(value))]
    )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data of the case events ---------------------------------------------------------


class Mappa(Strict):
    applies: bool
    category: Literal[1, 3] | None = None
    level: Literal[1, 2, 3] | None = None

    @model_validator(mode="after")
    def _category_and_level_go_with_applies(self) -> Mappa:
        if self.applies and (self.category is None or self.level is None):
            raise ValueError("category and level are required when MAPPA applies")
        if not self.applies and (self.category is not None or self.level is not None):
            raise ValueError("category and level are given only when MAPPA applies")
        return self


class IncidentNotifiedData(Strict):
    council_reference: Annotated[str, Field(min_length=1, max_length=64), STORABLE]
    incident_date: dt.date
    became_aware_date: dt.date | None = None
    criterion: Criterion
    incident_type: IncidentType
    incident_type_detail: ShortText | None = None
    order_type: OrderType
    subject_role: SubjectRole
    mappa: Mappa
    # Schema version 2: true, false, or null/absent for not known (version 1: true or false).
    domestic_abuse_aggravated: bool | None = Field(
        None, description="true, false or null (not known; schema version 2 only, version 1 requires true or false)"
    )
    historical: bool
    signed_off_by: SignOffRole
    supervising_local_authority: LocalAuthoritySlug | None = None

    @model_validator(mode="after")
    def _dates_that_can_be(self) -> IncidentNotifiedData:
        """SPEC §4: no date before the configured floor (SIR_EARLIEST_DATE), and no
        awareness before the incident. (After the moment received: the envelope checks.)"""
        floor = get_settings().earliest_date
        for name in ("incident_date", "became_aware_date"):
            day = getattr(self, name)
            if day is not None and day < floor:
                raise field_error((name,), day, f"{name} {day} is before {floor}, the earliest date accepted")
        if self.became_aware_date is not None and self.became_aware_date < self.incident_date:
            raise field_error(
                ("became_aware_date",), self.became_aware_date,
                f"became_aware_date {self.became_aware_date} is before incident_date {self.incident_date}",
            )
        return self

    @model_validator(mode="after")
    def _mappa_region_known_on_incident_date(self) -> IncidentNotifiedData:
        # The SOG is the region's under the grouping in force on the incident date; a
        # date before the first grouping has no region to route to (docs/import.md).
        if self.mappa.applies:
            try:
                mappa_region_of(LOCAL_AUTHORITY_SLUGS[0], on=self.incident_date)
            except KeyError:
                raise field_error(
                    ("incident_date",), self.incident_date,
                    "no MAPPA region grouping is in force on this date (shared/reference/mappa_regions.json)",
                ) from None
        return self


class CriteriaAssessedData(Strict):
    meets_criteria: bool
    reason: ShortText | None = None


class SogDecisionRecordedData(Strict):
    scr_under_mappa: bool


class RiskAssessment(Strict):
    completed: bool
    up_to_date: bool
    tools: Annotated[list[RiskTool], Field(max_length=len(VOCABULARIES["risk_tool"])), DISTINCT] = []


class RiskManagementPlan(Strict):
    in_place: bool
    informed_by_assessment: bool


class ReviewSubmittedData(Strict):
    review_type: ReviewType
    signed_off_by: SignOffRole
    reviewer_independent: bool
    risk_assessment: RiskAssessment
    risk_management_plan: RiskManagementPlan
    order_reviews_referenced: bool
    good_practice_identified: bool
    findings: Annotated[list[Finding], Field(max_length=len(VOCABULARIES["finding"])), DISTINCT] = []


class AdditionalInfoRequestedData(Strict):
    note: ShortText | None = None


class AdditionalInfoProvidedData(Strict):
    pass


class ReviewRespondedData(Strict):
    outcome: Literal["concluded", "comprehensive_review_required"]
    iar_decision_appropriate: bool | None = None
    high_quality: bool | None = None


class CaseClosedData(Strict):
    reason: Literal["concluded", "criteria_not_met", "superseded_by_mappa_scr", "withdrawn"]


# --- data of the routing and deadline events -------------------------------------------


class NotificationForwardedData(Strict):
    recipient: Recipient
    channel: Annotated[str, Field(min_length=1, max_length=32), STORABLE]
    attempts: Annotated[int, Field(ge=1)]
    delivered_at: AwareDatetime


class NotificationForwardFailedData(Strict):
    recipient: Recipient
    attempts: Annotated[int, Field(ge=1)]
    error: ShortText


class DeadlineData(Strict):
    rule: DeadlineRule
    started_at: AwareDatetime
    due_at: AwareDatetime
    met_at: AwareDatetime | None = None
    breached_at: AwareDatetime | None = None
    working_days_late: Annotated[int, Field(ge=0)] | None = None


# --- the envelope ----------------------------------------------------------------------


class Actor(Strict):
    role: ActorRole
    id: Annotated[str, Field(min_length=1, max_length=64), STORABLE]


def _absent(value: object) -> bool:
    return value is None


CaseState = Literal["notified", "awaiting_review", "under_review", "awaiting_information", "concluded", "closed"]


class CaseAfter(Strict):
    """What intake decided the case is after a case event (shared/lifecycle.py), carried so
    that consumers read the decision instead of running the state machine and the MAPPA
    region table again (reference data that may differ between deployments)."""

    state: CaseState
    sog_region: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="The MAPPA region whose SOG is notified; null where MAPPA does not apply.",
    )
    responded: bool = Field(default=False, description="The Inspectorate has responded to a review of the case.")
    closed_reason: Annotated[str, Field(max_length=64)] | None = None


class Envelope(Strict):
    if TYPE_CHECKING:
        # Every event type declares its own `data` model, and consumers pick the type by
        # `event_type` (a string, which type checkers cannot narrow on). Declared for type
        # checkers only, so that the envelope's JSON Schema stays as it is.
        data: Any

    event_id: UUID
    event_type: str
    schema_version: Literal[1] = SCHEMA_VERSION
    case_id: UUID
    local_authority: LocalAuthoritySlug
    received_at: AwareDatetime
    recorded_at: AwareDatetime
    actor: Actor
    # Optional, and left out of the JSON when absent: events recorded before they existed
    # have neither, and only case events have a sequence, only derived events a cause.
    sequence: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None,
        exclude_if=_absent,
        description="Case events: 1, 2, 3 … per case, assigned by intake in commit order"
        " (SPEC §3). Consumers apply a case's events in this order.",
    )
    causation_id: UUID | None = Field(
        default=None,
        exclude_if=_absent,
        description="Derived events (routing's, deadlines'): the event_id of the event that caused them.",
    )
    case_after: CaseAfter | None = Field(
        default=None,
        exclude_if=_absent,
        description="Case events: the case as intake decided it after this event (its state, SOG region,"
        " whether responded, why closed). Absent from events recorded before it existed.",
    )


class IncidentNotified(Envelope):
    event_type: Literal["incident.notified"]
    # Version 2 lets domestic_abuse_aggravated be not known (null); version 1 events read as before.
    # pydantic lets a subclass widen a field (this event reads both versions); mypy holds
    # class attributes invariant, hence the ignore.
    schema_version: Literal[1, 2] = NOTIFIED_SCHEMA_VERSION  # type: ignore[assignment]
    data: IncidentNotifiedData

    @model_validator(mode="after")
    def _version_1_states_domestic_abuse(self) -> IncidentNotified:
        if self.schema_version == 1 and self.data.domestic_abuse_aggravated is None:
            raise field_error(
                ("data", "domestic_abuse_aggravated"), None,
                "domestic_abuse_aggravated is true or false in schema version 1 (version 2 allows null: not known)",
            )
        return self

    @model_validator(mode="after")
    def _dates_not_after_received(self) -> IncidentNotified:
        """No incident or awareness after the day received (its Scottish date): live, the
        day it arrives; imported, each event's own received_at."""
        received_on = local_date(self.received_at)
        for name in ("incident_date", "became_aware_date"):
            day = getattr(self.data, name)
            if day is not None and day > received_on:
                raise field_error(("data", name), day, f"{name} {day} is after the day received, {received_on}")
        return self


class CriteriaAssessed(Envelope):
    event_type: Literal["notification.criteria_assessed"]
    data: CriteriaAssessedData


class SogDecisionRecorded(Envelope):
    event_type: Literal["sog.decision_recorded"]
    data: SogDecisionRecordedData


class ReviewSubmitted(Envelope):
    event_type: Literal["review.submitted"]
    data: ReviewSubmittedData


class AdditionalInfoRequested(Envelope):
    event_type: Literal["review.additional_info_requested"]
    data: AdditionalInfoRequestedData


class AdditionalInfoProvided(Envelope):
    event_type: Literal["review.additional_info_provided"]
    data: AdditionalInfoProvidedData = AdditionalInfoProvidedData()


class ReviewResponded(Envelope):
    event_type: Literal["review.responded"]
    data: ReviewRespondedData


class CaseClosed(Envelope):
    event_type: Literal["case.closed"]
    data: CaseClosedData


class NotificationForwarded(Envelope):
    event_type: Literal["notification.forwarded"]
    data: NotificationForwardedData


class NotificationForwardFailed(Envelope):
    event_type: Literal["notification.forward_failed"]
    data: NotificationForwardFailedData


class DeadlineEventBase(Envelope):
    data: DeadlineData


class DeadlineOpened(DeadlineEventBase):
    event_type: Literal["deadline.opened"]


class DeadlineWarning(DeadlineEventBase):
    event_type: Literal["deadline.warning"]


class DeadlineMet(DeadlineEventBase):
    event_type: Literal["deadline.met"]


class DeadlineBreached(DeadlineEventBase):
    event_type: Literal["deadline.breached"]


class DeadlineCancelled(DeadlineEventBase):
    event_type: Literal["deadline.cancelled"]


CASE_EVENT_TYPES = (
    IncidentNotified,
    CriteriaAssessed,
    SogDecisionRecorded,
    ReviewSubmitted,
    AdditionalInfoRequested,
    AdditionalInfoProvided,
    ReviewResponded,
    CaseClosed,
)
ROUTING_EVENT_TYPES = (NotificationForwarded, NotificationForwardFailed)
DEADLINE_EVENT_TYPES = (DeadlineOpened, DeadlineWarning, DeadlineMet, DeadlineBreached, DeadlineCancelled)

# Union[...] spreads a tuple of models built above; `X | Y` cannot (hence noqa: UP007), and
# mypy cannot read a union built from data (hence the ignore; pydantic reads it at run time).
CaseEvent = Annotated[Union[CASE_EVENT_TYPES], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007
RoutingEvent = Annotated[Union[ROUTING_EVENT_TYPES], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007
DeadlineEvent = Annotated[Union[DEADLINE_EVENT_TYPES], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007
ALL_EVENT_TYPES = CASE_EVENT_TYPES + ROUTING_EVENT_TYPES + DEADLINE_EVENT_TYPES
AnyEvent = Annotated[Union[ALL_EVENT_TYPES], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007

CASE_EVENT: TypeAdapter[Envelope] = TypeAdapter(CaseEvent)
ANY_EVENT: TypeAdapter[Envelope] = TypeAdapter(AnyEvent)


def event_type_of(model: type[Envelope]) -> str:
    """The `event_type` string a model class stands for."""
    return model.model_fields["event_type"].annotation.__args__[0]  # type: ignore[union-attr]


CASE_EVENT_MODELS: dict[str, type[Envelope]] = {event_type_of(m): m for m in CASE_EVENT_TYPES}
