"""The console's pages (HTTP only): each reads or posts through the APIs with the
signed-in user's token and renders a template. Rules live in domain.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from services.console import domain
from services.console.client import Api, NotFound, Refused, Rejected, SignedOut, Unavailable
from services.console.sessions import Session, Sessions
from shared.reference import LOCAL_AUTHORITIES, MAPPA_REGIONS, VOCABULARIES, label

COOKIE = "sir_console"
SIGN_IN_COOKIE = "sir_console_sign_in"
# Jinja2Templates escapes .html templates by default.
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals.update(
    label=label, vocabularies=VOCABULARIES, authorities=LOCAL_AUTHORITIES, regions=MAPPA_REGIONS,
    dom_id=domain.dom_id, states=domain.STATES, day=domain.day, due=domain.due, recipient_name=domain.recipient_name,
    due_date=domain.due_date, when_=lambda v: domain.when(domain._at(v)),
    close_reasons=domain.CLOSE_REASONS,
    options=lambda kind: [(v, label(kind, v)) for v in VOCABULARIES[kind]],
    authority_options=[(a.slug, a.name) for a in sorted(LOCAL_AUTHORITIES.values(), key=lambda a: a.name)],
)
router = APIRouter()

HOME = {"council": "/cases", "sog": "/cases", "inspectorate": "/queues", "admin": "/deliveries"}


class NotSignedIn(Exception):
    pass


class WrongRole(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class BadCsrf(Exception):
    pass


def _api(request: Request) -> Api:
    return request.app.state.api


def _sessions(request: Request) -> Sessions:
    return request.app.state.sessions


def signed_in(request: Request) -> Session:
    session = _sessions(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn()
    request.state.session = session
    return session


def role(*roles: str):
    who = {"council": "councils", "inspectorate": "the Care Inspectorate", "sog": "Strategic Oversight Groups",
           "admin": "operators"}

    def dependency(session: Annotated[Session, Depends(signed_in)]) -> Session:
        if session.role not in roles:
            raise WrongRole(f"This page is for {' and '.join(who[r] for r in roles)}; you are signed in as {_scope(session)}.")
        return session

    return dependency


async def csrf_checked(request: Request, session: Annotated[Session, Depends(signed_in)]) -> FormData:
    form = await request.form()
    if not secrets.compare_digest(str(form.get("csrf_token", "")), session.csrf):
        raise BadCsrf()
    return form


def _scope(session: Session) -> str:
    if session.role == "council" and session.local_authority is not None:
        return f"a council: {LOCAL_AUTHORITIES[session.local_authority].name}"
    if session.role == "sog":
        return f"the Strategic Oversight Group of {domain.region_name(session.region)}"
    return {"inspectorate": "the Care Inspectorate", "admin": "an operator (admin)"}[session.role]


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    flashes = []
    if session is not None:
        flashes, session.flashes = session.flashes, []
    return templates.TemplateResponse(
        request, template,
        {"session": session, "scope": _scope(session) if session else None, "flashes": flashes,
         "path": request.url.path, "region_name": domain.region_name, **context},
        status_code=status,
    )


def _form_lists(form: FormData) -> dict[str, list[str]]:
    return {key: [str(v) for v in form.getlist(key)] for key in form.keys()}


# --- signing in and out ----------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request, ended: str | None = None) -> HTMLResponse:
    return _sign_in(request, ended=ended)


def _sign_in(request: Request, status: int = 200, error: str | None = None, ended: str | None = None) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = render(request, "sign_in.html", status, nonce=nonce, error=error, ended=ended)
    response.set_cookie(SIGN_IN_COOKIE, nonce, httponly=True, samesite="strict", secure=_https(request),
                        path="/sign-in", max_age=3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request, token: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = "") -> Response:
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not secrets.compare_digest(csrf_token, expected):
        return _sign_in(request, 400, error="The sign-in form had expired. Enter your token again.")
    token = token.strip()
    identity = await _api(request).whoami(token) if token else None
    if identity is None:
        message = "Enter your token" if not token else "That token is not valid: it may be mistyped or revoked"
        return _sign_in(request, 401 if token else 422, error=message)
    session = _sessions(request).start(token, identity)
    response = RedirectResponse(HOME[session.role], status_code=303)
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", secure=_https(request), path="/")
    response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, _: Annotated[FormData, Depends(csrf_checked)]) -> Response:
    _sessions(request).end(request.state.session.id)
    response = RedirectResponse("/sign-in?ended=signed-out", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
async def home(session: Annotated[Session, Depends(signed_in)]) -> Response:
    return RedirectResponse(HOME[session.role], status_code=303)


# --- council: notify ---------------------------------------------------------------------------


@router.get("/notify")
async def notify_page(request: Request, session: Annotated[Session, Depends(role("council"))]) -> HTMLResponse:
    return render(request, "notify.html", values={}, errors={}, idempotency_key=str(uuid.uuid4()), warnings=[])


@router.post("/notify")
async def notify(request: Request, session: Annotated[Session, Depends(role("council"))],
                 form: Annotated[FormData, Depends(csrf_checked)]) -> Response:
    values = _form_lists(form)
    body = domain.body_of(values, domain.NOTIFICATION_FIELDS)
    key = str(form.get("idempotency_key") or uuid.uuid4())
    try:
        if not form.get("warnings_seen"):
            # First intake's check (nothing stored): what it would warn about is shown
            # before the notification is sent, and the council sends it, or corrects it.
            checked = await _api(request).post(session, "intake", "/v1/notifications/check", body)
            if checked["warnings"]:
                return render(request, "notify.html", values=values, errors={}, idempotency_key=key,
                              warnings=[domain.warning_text(w) for w in checked["warnings"]])
        answer = await _api(request).post(session, "intake", "/v1/notifications", body, headers={"Idempotency-Key": key})
    except Rejected as rejection:
        errors = domain.field_errors(rejection.detail) if rejection.status == 422 else {"": str(rejection.detail)}
        return render(request, "notify.html", rejection.status, values=values, errors=errors, idempotency_key=key)
    session.flashes.append(("success", "Incident notified. The Care Inspectorate has it now."))
    # Categorisation warnings (the notification is accepted all the same): what to follow up.
    for warning in answer.get("warnings") or []:
        session.flashes.append(("warning", domain.warning_text(warning)))
    return RedirectResponse(f"/cases/{answer['case_id']}", status_code=303)


# --- cases -------------------------------------------------------------------------------------


@router.get("/cases")
async def cases_page(request: Request, session: Annotated[Session, Depends(role("council", "sog", "inspectorate"))],
                     closed: bool = False, local_authority: str = "") -> HTMLResponse:
    params: dict = {"limit": 500}
    if closed:
        params["status"] = list(domain.STATES)
    if local_authority in LOCAL_AUTHORITIES:
        params["local_authority"] = local_authority
    cases = await _api(request).get(session, "reporting", "/v1/cases", **params)
    return render(request, "cases.html", cases=domain.overdue_first(cases), closed=closed,
                  chosen=params.get("local_authority", ""), next_deadline=domain.next_deadline)


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/cases/{case_id}")
async def case_page(request: Request, case_id: uuid.UUID,
                    session: Annotated[Session, Depends(role("council", "sog", "inspectorate"))]) -> HTMLResponse:
    return await _case(request, session, case_id)


async def _case(request: Request, session: Session, case_id: uuid.UUID, status: int = 200, action: str | None = None,
                values: dict | None = None, errors: dict | None = None) -> HTMLResponse:
    api = _api(request)
    case = await api.get(session, "intake", f"/v1/cases/{case_id}")
    deadlines, deliveries = await asyncio.gather(
        _deadlines_of(api, session, case_id),
        api.get(session, "routing", "/v1/deliveries", case_id=str(case_id)) if session.role == "inspectorate" else _nothing(),
    )
    facts = domain.facts_of(case)
    notification: dict = next((e["data"] for e in case["events"] if e["event_type"] == "incident.notified"), {})
    return render(
        request, "case.html", status, case=case, facts=facts, notification=notification,
        actions=domain.actions_for(session.role, facts),
        timeline=domain.timeline(case["events"], deadlines, deliveries, label),
        owed=domain.awaiting(deadlines), action=action, values=values or {}, errors=errors or {},
    )


async def _deadlines_of(api: Api, session: Session, case_id: uuid.UUID) -> list[dict]:
    try:
        return (await api.get(session, "deadlines", f"/v1/cases/{case_id}/deadlines"))["deadlines"]
    except NotFound:  # the deadlines service has not seen the case yet
        return []


async def _nothing() -> list:
    return []


@router.post("/cases/{case_id}/{action}")
async def case_action(request: Request, case_id: uuid.UUID, action: str,
                      session: Annotated[Session, Depends(role("council", "sog", "inspectorate"))],
                      form: Annotated[FormData, Depends(csrf_checked)]) -> Response:
    if action not in domain.ACTIONS:
        raise NotFound(f"no action {action}")
    event_type, fields = domain.ACTIONS[action]
    values = _form_lists(form)
    command = {"event_type": event_type, "data": domain.body_of(values, fields)}
    try:
        await _api(request).post(session, "intake", f"/v1/cases/{case_id}/events", command)
    except Rejected as rejection:
        if rejection.status == 409:
            errors = {"": f"This could not be recorded because the case has moved on: {domain.in_words(rejection.detail)}. "
                          "The page now shows the case as it is."}
            return await _case(request, session, case_id, 409, errors=errors)
        errors = {f"{action}:{name}": message for name, message in domain.field_errors(
            _strip_data(rejection.detail, event_type)).items()}
        return await _case(request, session, case_id, 422, action=action, values=values, errors=errors)
    session.flashes.append(("success", f"{domain.EVENT_TITLES[event_type]}."))
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


def _strip_data(detail, event_type: str):
    """A case event's errors sit under `body.<event_type>.data`; the form's fields do not."""
    if not isinstance(detail, list):
        return detail
    return [e | {"loc": [p for p in e.get("loc", []) if p not in ("body", "data", event_type)]} for e in detail]


# --- inspectorate: queues -----------------------------------------------------------------------


@router.get("/queues")
async def queues_page(request: Request, session: Annotated[Session, Depends(role("inspectorate"))]) -> HTMLResponse:
    api = _api(request)
    notified, responses, info, breached = await asyncio.gather(
        api.get(session, "reporting", "/v1/cases", status="notified", limit=500),
        _owed(api, session, "inspectorate_response"),
        _owed(api, session, "additional_info"),
        api.get(session, "deadlines", "/v1/deadlines", status="breached", limit=1000),
    )
    undecided = await _not_assessed(api, session, notified)
    now = dt.datetime.now(dt.UTC)
    return render(
        request, "queues.html", undecided=undecided, responses=responses, info=info,
        breaches=domain.recent_breaches(breached["deadlines"], now), days_left=lambda d: domain.days_left(d, now),
    )


async def _owed(api: Api, session: Session, rule: str) -> list[Mapping]:
    open_, breached = await asyncio.gather(
        api.get(session, "deadlines", "/v1/deadlines", rule=rule, status="open", limit=1000),
        api.get(session, "deadlines", "/v1/deadlines", rule=rule, status="breached", limit=1000),
    )
    return domain.awaiting(open_["deadlines"] + breached["deadlines"])


async def _not_assessed(api: Api, session: Session, cases: list[dict]) -> list[dict]:
    """Notified cases whose history holds no criteria assessment yet (the casework view
    does not say; intake's history does)."""
    limit = asyncio.Semaphore(8)

    async def history(case):
        async with limit:
            return await api.get(session, "intake", f"/v1/cases/{case['case_id']}")

    histories = await asyncio.gather(*(history(c) for c in cases))
    return [c for c, h in zip(cases, histories, strict=True) if not domain.facts_of(h).assessed]


# --- reports ------------------------------------------------------------------------------------


FORMATS = {"html": "HTML", "csv": "CSV", "json": "JSON"}


@router.get("/reports")
async def reports_page(request: Request, session: Annotated[Session, Depends(role("inspectorate", "admin"))],
                       period_from: str | None = None, period_to: str | None = None,
                       year: str | None = None, quarter: str | None = None) -> HTMLResponse:
    today = dt.date.today()
    errors, national, quarterly = {}, None, None
    if period_from is not None or period_to is not None:
        try:
            start, end = dt.date.fromisoformat(period_from or ""), dt.date.fromisoformat(period_to or "")
            if end < start:
                errors["period_to"] = "The end of the period must be on or after its start"
            else:
                national = f"period_from={start}&period_to={end}"
        except ValueError:
            for name, value in (("period_from", period_from), ("period_to", period_to)):
                if not _is_date(value):
                    errors[name] = "Enter a real date, for example 2026-11-20"
    if year is not None:
        if not (year or "").isdigit() or not 2000 <= int(year) <= today.year:
            errors["year"] = f"Enter a year from 2000 to {today.year}"
        elif quarter not in ("Q1", "Q2", "Q3", "Q4"):
            errors["quarter"] = "Choose a quarter"
        else:
            quarterly = f"{year}/{quarter}"
    return render(request, "reports.html", 422 if errors else 200, errors=errors, national=national, quarterly=quarterly,
                  values={"period_from": period_from or f"{today.year}-01-01", "period_to": period_to or str(today),
                          "year": year or str(today.year), "quarter": quarter},
                  formats=FORMATS)


def _is_date(value: str | None) -> bool:
    try:
        dt.date.fromisoformat(value or "")
        return True
    except ValueError:
        return False


@router.get("/reports/national.{fmt}")
async def national_report(request: Request, fmt: str, period_from: dt.date, period_to: dt.date,
                          session: Annotated[Session, Depends(role("inspectorate", "admin"))]) -> Response:
    return await _report(request, session, fmt, "/v1/reports/national",
                         {"from": str(period_from), "to": str(period_to)})


@router.get("/reports/quarterly/{year}/{quarter}.{fmt}")
async def quarterly_report(request: Request, year: int, quarter: str, fmt: str,
                           session: Annotated[Session, Depends(role("inspectorate", "admin"))]) -> Response:
    return await _report(request, session, fmt, f"/v1/reports/quarterly/{year}/{quarter}", {})


async def _report(request: Request, session: Session, fmt: str, path: str, params: dict) -> Response:
    if fmt not in FORMATS:
        raise NotFound(f"no report format {fmt}")
    answer = await _api(request).raw(session, "reporting", path, format=fmt, **params)
    headers = {k: v for k, v in answer.headers.items() if k.lower() == "content-disposition"}
    return Response(answer.content, media_type=answer.headers.get("content-type"), headers=headers)


# --- deliveries -----------------------------------------------------------------------------------


@router.get("/deliveries")
async def deliveries_page(request: Request, session: Annotated[Session, Depends(role("inspectorate", "admin"))],
                          status: str | None = None) -> HTMLResponse:
    params = {"status": status} if status in ("pending", "delivered", "failed") else {}
    deliveries = await _api(request).get(session, "routing", "/v1/deliveries", **params)
    deliveries.sort(key=lambda d: d["created_at"], reverse=True)
    return render(request, "deliveries.html", deliveries=deliveries, shown=params.get("status"))


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(request: Request, delivery_id: uuid.UUID, session: Annotated[Session, Depends(role("admin"))],
                         _: Annotated[FormData, Depends(csrf_checked)]) -> Response:
    try:
        await _api(request).post(session, "routing", f"/v1/deliveries/{delivery_id}/retry")
        session.flashes.append(("success", "The delivery will be tried again now."))
    except Rejected as rejection:
        session.flashes.append(("error", f"Not retried: {rejection.detail}"))
    return RedirectResponse("/deliveries", status_code=303)


# --- answers that are pages -----------------------------------------------------------------------


def install(app: FastAPI) -> None:
    app.include_router(router)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _: NotSignedIn) -> Response:
        return RedirectResponse("/sign-in", status_code=303)

    @app.exception_handler(SignedOut)
    async def signed_out(request: Request, error: SignedOut) -> Response:
        # The token was revoked: every session it opened ends now.
        _sessions(request).end_token(str(error))
        response = RedirectResponse("/sign-in?ended=token", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        return render(request, "problem.html", 403, title="You cannot see this page", reason=str(error))

    @app.exception_handler(WrongRole)
    async def wrong_role(request: Request, error: WrongRole) -> Response:
        return render(request, "problem.html", 403, title="You cannot see this page", reason=str(error))

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, _: BadCsrf) -> Response:
        return render(request, "problem.html", 403, title="This form had expired",
                      reason="Nothing was changed. Go back, reload the page and send the form again.")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> Response:
        return render(request, "problem.html", 404, title="Page not found", reason=str(error))

    @app.exception_handler(404)
    async def no_route(request: Request, _) -> Response:
        _session_if_any(request)
        return render(request, "problem.html", 404, title="Page not found",
                      reason="Check the address, or start again from the home page.")

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, error: Unavailable) -> Response:
        return render(request, "problem.html", 503, title="Sorry, there is a problem with the service",
                      reason=f"{error} Try again in a few minutes; nothing you sent has been lost.")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        if response.headers.get("content-type", "").startswith("text/html") and not request.url.path.startswith("/reports/"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.url.path != "/sign-in" and not request.url.path.startswith("/assets/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _session_if_any(request: Request) -> None:
    session = _sessions(request).get(request.cookies.get(COOKIE))
    if session is not None:
        request.state.session = session
