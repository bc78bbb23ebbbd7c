"""Intake's HTTP API: councils, the Inspectorate and SOGs post case events here."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, create_model
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.intake import history, repository, service
from shared.auth import Principal, may_be_a_token, request_clock, request_database
from shared.events import CASE_EVENT_MODELS, IncidentNotifiedData
from shared.http import BODY_LIMIT, DATABASE_AWAY
from shared.lifecycle import Refused
from shared.logs import event_fields
from shared.outbox import in_process_waker
from shared.policy import Authorized, authorized, check_may_read_case
from shared.settings import get_settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["cases"])

# The Idempotency-Key header is read by the routes that take it (`_idempotency_key`) and
# documented as FastAPI documents a header parameter: FastAPI's own resolution of a header
# parameter cost about 4% of intake's CPU a request (issue 15).
IDEMPOTENCY_KEY = "Idempotency-Key"
_IDEMPOTENCY_KEY_DESCRIPTION = "Send the same key again with the same body to get the first answer again."
_IdempotencyKey: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(max_length=200)])
TAKES_IDEMPOTENCY_KEY = {"parameters": [{
    "name": IDEMPOTENCY_KEY, "in": "header", "required": False, "description": _IDEMPOTENCY_KEY_DESCRIPTION,
    "schema": {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "null"}], "title": IDEMPOTENCY_KEY,
               "description": _IDEMPOTENCY_KEY_DESCRIPTION},
}]}


def _idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, or None; a key over 200 characters is the 422 that
    names the header."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    try:
        return _IdempotencyKey.validate_python(key)
    except ValidationError as refusal:
        raise RequestValidationError(
            [error | {"loc": ("header", IDEMPOTENCY_KEY)} for error in refusal.errors(include_url=False)]
        ) from None


def _command_model(event_type: str) -> type[BaseModel]:
    data_field = CASE_EVENT_MODELS[event_type].model_fields["data"]
    name = "".join(part.title() for part in event_type.replace(".", "_").split("_")) + "Command"
    # Models made at import time, one per event type: beyond what a type checker follows.
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        event_type=(Literal[event_type], ...),  # type: ignore[arg-type]
        data=(data_field.annotation, data_field.default if not data_field.is_required() else ...),  # type: ignore[arg-type]
    )


CaseEventCommand = Annotated[  # type: ignore[valid-type]
    Union[tuple(_command_model(t) for t in CASE_EVENT_MODELS if t != "incident.notified")],  # noqa: UP007
    Field(discriminator="event_type"),
]


class Warning(BaseModel):
    field: str
    reason: str


class Accepted(BaseModel):
    case_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    state: str
    recorded_at: str
    # A notification's categorisation left missing or vague (shared/categorisation.py):
    # accepted all the same, counted in the reports and listed for follow-up.
    warnings: list[Warning] = []


class CaseView(BaseModel):
    case_id: uuid.UUID
    local_authority: str
    state: str
    closed_reason: str | None
    sog_region: str | None
    events: list[dict]


async def post_notification(body: IncidentNotifiedData, request: Request, principal: Authorized) -> Response:
    """A council notifies a serious incident; the answer carries the new case's id."""
    answer = await _record(
        request, principal, _idempotency_key(request),
        event_type="incident.notified", case_id=None, data=body,
    )
    return _created(answer, Location=f"/v1/cases/{answer['case_id']}")


class _NotificationRoute(APIRoute):
    """`POST /v1/notifications` as FastAPI serves it, but a JSON body that the model takes
    goes straight to the route: read once, parsed and validated in one step by pydantic
    (`model_validate_json`), then the token's check and the route. FastAPI's own handler
    parses the body with `json.loads`, validates the result, and resolves the route's
    parameters (about a tenth of intake's CPU a request; issue 15). Anything else (another
    content type, no body, bad JSON, a field refused, a body `json.loads` reads and
    pydantic's parser does not, such as one with a byte-order mark) goes to FastAPI's own
    handler, the body it reads being the one read here (Starlette keeps it): so its
    answers, 422 shape and order of checks (JSON before the token, the token before the
    fields) are FastAPI's. The OpenAPI document is the route's, as declared.

    The token's check and the write share one connection of the pool, taken for the
    request (`shared.auth.request_database`): one turn through the pool, not two. Without a
    bearer token shaped like ours to check (`shared.auth.may_be_a_token`), or with no
    connection to be had, FastAPI's handler answers, as it did (401 without a token,
    taking no connection). A body the client cuts off is FastAPI's 400, a body over the
    limit its 413."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        served_by_fastapi = super().get_route_handler()

        async def handle(request: Request) -> Response:
            if request.headers.get("content-type") == "application/json" and may_be_a_token(request):
                try:
                    raw = await request.body()
                except StarletteHTTPException:  # over the body limit (shared/http.py): 413, as FastAPI's
                    raise
                except Exception as error:  # the client went away mid-body: FastAPI's 400, not a 500
                    raise HTTPException(400, "There was an error parsing the body") from error
                try:
                    body = IncidentNotifiedData.model_validate_json(raw)
                except ValidationError:
                    return await served_by_fastapi(request)
                pool = request.app.state.pool
                try:
                    connection = await pool.acquire()
                except DATABASE_AWAY:  # answered as before: 401 without a token, else 503
                    return await served_by_fastapi(request)
                try:
                    request.state.connection = connection  # the token's check and the write (request_database)
                    return await post_notification(body, request, await authorized(request))
                finally:
                    del request.state.connection
                    await pool.release(connection)
            return await served_by_fastapi(request)

        return handle


router.add_api_route(
    "/notifications", post_notification, methods=["POST"], status_code=201, response_model=Accepted,
    openapi_extra=TAKES_IDEMPOTENCY_KEY, route_class_override=_NotificationRoute,
)


class Checked(BaseModel):
    warnings: list[Warning]


@router.post("/notifications/check", response_model=Checked)
async def check_notification(body: IncidentNotifiedData, request: Request, principal: Authorized) -> dict:
    """Check a notification as `POST /v1/notifications` would, storing nothing: 422 for what
    it would refuse (dates judged against now), else the categorisation warnings its 201
    answer would carry. The console shows them before a council sends."""
    try:
        return {"warnings": await service.check_notification(request.app.state.pool, principal, body)}
    except ValidationError as refusal:
        raise _body_error(refusal) from None


@router.post("/cases/{case_id}/events", status_code=201, response_model=Accepted, openapi_extra=TAKES_IDEMPOTENCY_KEY)
async def post_case_event(
    case_id: uuid.UUID,
    body: CaseEventCommand,  # type: ignore[valid-type]
    request: Request,
    principal: Authorized,
) -> Response:
    """Any later event of a case: assessment, SOG decision, review, response, closing."""
    return _created(await _record(
        request, principal, _idempotency_key(request),
        event_type=body.event_type, case_id=case_id, data=body.data,  # type: ignore[attr-defined]
    ))


class _RenderedAnswer(JSONResponse):
    """JSONResponse's bytes (compact, UTF-8 unescaped) from pydantic's serialiser, a
    tenth of `json.dumps`'s time for an answer of strings (issue 15)."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


def _created(answer: dict, **headers: str) -> Response:
    """The 201 answer as it is (service.py made it in the shape of `Accepted`, and a repeated
    request gets the stored one): rendered once, not validated again on its way out."""
    return _RenderedAnswer(answer, status_code=201, headers=headers)


@router.get("/cases/{case_id}", response_model=CaseView)
async def get_case(
    case_id: uuid.UUID, request: Request, principal: Authorized
) -> dict:
    """The case's state and its whole history of events."""
    found = await repository.read_case(request.app.state.pool, case_id)
    if found is None:
        raise HTTPException(404, f"no case {case_id}")
    case, envelopes = found
    check_may_read_case(principal, case_id, case.local_authority, case.sog_region)
    return {
        "case_id": case_id,
        "local_authority": case.local_authority,
        "state": case.state,
        "closed_reason": case.closed_reason,
        "sog_region": case.sog_region,
        "events": envelopes,
    }


class ImportLineError(BaseModel):
    line: int
    case_id: uuid.UUID | None
    reason: str


class ImportReport(BaseModel):
    imported: int = Field(description="events stored now")
    skipped: int = Field(description="events stored already (same event_id and content): an import is idempotent")
    rejected: int = Field(description="lines not stored: bad lines and every line of a case with a bad line")
    errors: list[ImportLineError] = Field(description="each bad line, with its number (from 1) and the reason")


NDJSON = "application/x-ndjson"


@router.post(
    "/import",
    response_model=ImportReport,
    tags=["operations"],
    openapi_extra={
        BODY_LIMIT: history.MAX_BODY_BYTES,
        "requestBody": {
            "required": True,
            "description": f"History: one SPEC §3 event per line, at most {history.MAX_BODY_BYTES} bytes"
            " (bigger files: `sir import FILE`).",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        }
    },
)
async def post_import(
    request: Request, _: Authorized
) -> dict:
    """Import history (admin): each case whole or not at all; see docs/import.md."""
    if request.headers.get("content-type", "").split(";")[0].strip() != NDJSON:
        raise HTTPException(415, f"send the history as {NDJSON}, one event per line")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > history.MAX_BODY_BYTES:
        raise HTTPException(413, f"at most {history.MAX_BODY_BYTES} bytes; use `sir import FILE` for more")
    try:  # streamed: the body is read in chunks and validated before anything is stored
        report = await history.import_history(
            request.app.state.pool, request.stream(), max_bytes=history.MAX_BODY_BYTES,
            max_line_bytes=get_settings().max_message_bytes,
        )
    except history.TooLarge:
        raise HTTPException(413, f"at most {history.MAX_BODY_BYTES} bytes; use `sir import FILE` for more") from None
    return report.as_dict()


async def _record(
    request: Request,
    principal: Principal,
    idempotency_key: str | None,
    *,
    event_type: str,
    case_id: uuid.UUID | None,
    data: BaseModel,
) -> dict:
    """The use case (service.py), its refusals translated to HTTP."""
    database, max_bytes = request_database(request), request.app.state.settings.max_message_bytes
    now = request_clock(request)  # read with the token: no round trip of its own
    # This process's outbox relay, woken here once the event is committed (no NOTIFY).
    wake = in_process_waker(repository.SCHEMA)
    try:
        if case_id is None:
            recorded = await service.record_notification(
                database, principal, data, idempotency_key=idempotency_key, max_bytes=max_bytes, now=now, wake=wake
            )
        else:
            recorded = await service.record_case_event(
                database, principal, case_id, event_type, data, idempotency_key=idempotency_key, max_bytes=max_bytes,
                now=now, wake=wake,
            )
    except ValidationError as refusal:
        raise _body_error(refusal) from None
    except service.IntakeError as refusal:
        raise HTTPException(_STATUS[type(refusal)], str(refusal)) from None
    except Refused as refusal:  # the lifecycle: the case's state does not allow this event
        raise HTTPException(409, str(refusal)) from None
    if recorded.event is not None and log.isEnabledFor(logging.INFO):  # not an earlier request's answer
        log.info("accepted %s", event_type, extra=event_fields(recorded.event))
    return recorded.answer


def _body_error(refusal: ValidationError) -> RequestValidationError:
    """A refusal of the built event (a date after the moment received) as the 422 of the
    body's field, as FastAPI words its own."""
    return RequestValidationError(
        [error | {"loc": ("body", *error["loc"][1:])} for error in refusal.errors(include_url=False)]
    )


# Each refusal of the use case, as HTTP says it (shared.policy.Forbidden: 403, shared/http.py).
_STATUS: dict[type[service.IntakeError], int] = {
    service.NoSuchCase: 404,
    service.IdempotencyConflict: 409,
    service.IdempotencyInProgress: 409,
    service.EventTooLarge: 413,
}
