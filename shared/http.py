"""What every service's HTTP answers share (docs/api.md): one error shape, the
body limits, the security headers, and the request metrics that count every answer,
server errors included.

The error shape is FastAPI's: `{"detail": "the reason"}` for every status, except 422,
whose `detail` is a list of `{"loc", "msg", "type"}`, one per field. The input is never
echoed: a field's location and the reason name it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS
from shared.policy import Forbidden

log = logging.getLogger(__name__)

# The largest request body a route takes unless it declares its own limit with
# `openapi_extra={BODY_LIMIT: n}`: a valid case event is a few kilobytes.
DEFAULT_BODY_LIMIT = 64 * 1024
BODY_LIMIT = "x-max-body-bytes"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What a client is told to wait before trying again while the database is away.
RETRY_AFTER_SECONDS = 5
# A 422 lists at most this many field errors, each location part at most this long.
MAX_FIELD_ERRORS = 20
MAX_LOCATION_PART = 64

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Every /v1 answer is case data or computed from it: never kept by a browser or a proxy.
CASE_DATA_PATH = "/v1/"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer (docs/api.md): a sentence, or for 422 one entry per field."""

    detail: str | list[FieldError]


def _documented(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


# Documented on every API route (422 is FastAPI's own, same shape without `input`).
ERROR_RESPONSES: dict[int | str, dict] = {
    401: _documented("No valid bearer token"),
    403: _documented("The token's role or scope does not allow this (docs/access.md)"),
    413: _documented("The body is over the route's limit, or the event over SIR_MAX_MESSAGE_BYTES"),
    503: _documented("The database is away; try again after Retry-After seconds"),
}


def error_body(detail: Any) -> dict:
    return {"detail": detail}


def _location_part(part: object) -> str | int:
    if isinstance(part, int):
        return part
    # A key of the input may be anything JSON allows, a lone surrogate included.
    text = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_LOCATION_PART else text[:MAX_LOCATION_PART] + "…"


def field_errors(errors: list[dict]) -> list[dict]:
    """Pydantic's errors without the input (and its context, which may quote it)."""
    return [
        {
            "loc": [_location_part(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", ""))[:300],
            "type": str(error.get("type", "value_error")),
        }
        for error in errors[:MAX_FIELD_ERRORS]
    ]


def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    detail = error.detail
    if error.status_code == 422 and isinstance(detail, list):
        detail = field_errors(detail)
    return JSONResponse(error_body(detail), status_code=error.status_code, headers=error.headers)


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body(field_errors(list(error.errors()))), status_code=422)


def _forbidden(request: Request, error: Forbidden) -> JSONResponse:
    return JSONResponse(error_body(str(error)), status_code=403)


def _database_away(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, asyncpg.InterfaceError) and not _connection_lost(error):
        raise error  # a programming error, not an outage: a 500
    # One line, no traceback: an outage repeats it for every request.
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, type(error).__name__)
    return JSONResponse(
        error_body("the database is unavailable; try again shortly"),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _connection_lost(error: asyncpg.InterfaceError) -> bool:
    text = str(error)
    return "closed" in text or "closing" in text or "connection" in text


# Errors that mean the database cannot be reached now, not that the request is wrong.
DATABASE_AWAY = (
    asyncpg.PostgresConnectionError,  # the connection broke or could not be made
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # pool closing, connection closed (others re-raised: 500)
    ConnectionError,  # refused or reset while the pool reconnects
    TimeoutError,  # no connection from the pool in time
)


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types a handler's exception as Exception, though it calls each handler only
    # with the class it was registered for; hence the ignores (a handler takes its own class).
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Forbidden, _forbidden)  # type: ignore[arg-type]
    for kind in DATABASE_AWAY:
        app.add_exception_handler(kind, _database_away)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this route's limit of {limit} bytes")


def body_limit_of(route: object) -> int:
    extra = getattr(route, "openapi_extra", None) or {}
    return extra.get(BODY_LIMIT, DEFAULT_BODY_LIMIT)


class Guard:
    """Pure ASGI middleware, outermost: it sees every answer, including those of
    unhandled exceptions, which it turns into a JSON 500 (logged with its traceback)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        # The request metrics' children, looked up once per series rather than once a
        # request (`labels()` builds and checks its key under a lock each time; issue 15).
        # Bounded as the series are: route templates, METHODS and statuses.
        self._counted: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        case_data = scope["path"].startswith(CASE_DATA_PATH)

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                headers.append((b"x-content-type-options", b"nosniff"))
                if case_data:
                    headers.append((b"cache-control", b"no-store"))
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html") and case_data:
                    headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, _limited(scope, receive), send_with_headers)
        except BodyTooLarge as error:  # read outside a route (else its handler answers)
            if response_started:
                raise
            await self._answer(send_with_headers, 413, error.detail)
        except Exception:
            if response_started:
                raise
            log.exception("%s %s: unhandled error", scope.get("method"), scope.get("path"))
            await self._answer(send_with_headers, 500, "internal error")
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            # Any token is a method to HTTP: a bounded label set keeps the series bounded.
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            counted = self._counted.get((route, method, status))
            if counted is None:
                counted = self._counted[route, method, status] = (
                    HTTP_REQUESTS.labels(self.service, route, method, str(status)),
                    HTTP_SECONDS.labels(self.service, route),
                )
            requests, seconds = counted
            requests.inc()
            seconds.observe(time.perf_counter() - started)

    @staticmethod
    async def _answer(send: Send, status: int, detail: str) -> None:
        body = json.dumps(error_body(detail)).encode()
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _limited(scope: Scope, receive: Receive) -> Receive:
    """`receive`, refusing a body over the limit of the route it was routed to (the body
    is read only once routing chose the route): at once if Content-Length says so."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        limit = body_limit_of(scope.get("route"))
        if received == 0:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit
