"""The console's calls to the four services' APIs, each with the signed-in user's token.

An answer the pages cannot use becomes an exception the app turns into a page: 401 ends
the session (`SignedOut`), 403 the refusal page, 404 the not-found page, a service that
does not answer the unavailable page. 409 and 422 are for the page that sent the form.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.console.sessions import Session
from shared.settings import SERVICES, Settings


class SignedOut(Exception):
    """The API refused the session's token (revoked or unknown)."""


class Refused(Exception):
    """403: the reason is shown on the refusal page."""


class NotFound(Exception):
    pass


class Unavailable(Exception):
    """A service did not answer, or answered with a server error."""


class Rejected(Exception):
    """409 or 422: the page that sent the form shows it."""

    def __init__(self, status: int, detail) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail


class Api:
    def __init__(self, settings: Settings, transports: dict[str, httpx.AsyncBaseTransport] | None = None,
                 timeout: float = 10.0) -> None:
        transports = transports or {}
        self.clients = {
            name: httpx.AsyncClient(base_url=settings.url_of(name), transport=transports.get(name), timeout=timeout)
            for name in SERVICES
        }

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def whoami(self, token: str) -> dict | None:
        """The token's role and scope, or None when intake does not know it."""
        response = await self._send("intake", "GET", "/v1/whoami", token)
        return None if response.status_code == 401 else _json(response)

    async def get(self, session: Session, service: str, path: str, **params) -> Any:
        # The decoded JSON: an object or a list, as the path's OpenAPI operation says.
        return _json(await self.call(session, service, "GET", path, params=params))

    async def post(self, session: Session, service: str, path: str, body: dict | None = None,
                   headers: dict | None = None) -> dict:
        return _json(await self.call(session, service, "POST", path, json=body, headers=headers))

    async def raw(self, session: Session, service: str, path: str, **params) -> httpx.Response:
        """A whole answer (a report in CSV or HTML), errors already raised."""
        response = await self.call(session, service, "GET", path, params=params)
        _json(response, parse=False)
        return response

    async def call(self, session: Session, service: str, method: str, path: str, **kwargs) -> httpx.Response:
        response = await self._send(service, method, path, session.token, **kwargs)
        if response.status_code == 401:
            raise SignedOut(session.token_id)
        return response

    async def _send(self, service: str, method: str, path: str, token: str, headers: dict | None = None,
                    **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        try:
            return await self.clients[service].request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise Unavailable(f"the {service} service did not answer ({type(error).__name__})") from None


def _json(response: httpx.Response, parse: bool = True):
    status = response.status_code
    if status < 300:
        return response.json() if parse else None
    detail = _detail(response)
    if status == 403:
        raise Refused(detail)
    if status == 404:
        raise NotFound(detail)
    if status in (409, 422):
        raise Rejected(status, detail)
    raise Unavailable(f"the service answered {status}: {detail}")


def _detail(response: httpx.Response):
    try:
        return response.json().get("detail", response.text)
    except ValueError:
        return response.text
