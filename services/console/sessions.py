"""Console sessions, kept server-side: the browser holds only a random id.

A token is exchanged once for a session at sign-in. A session ends at sign-out, after
`idle` without a request, `lifetime` after sign-in, or as soon as any API answers 401 to
its token (revoked): then every session of that token ends. Sessions live in this
process's memory, so restarting the console signs everyone out, which is safe.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Session:
    id: str
    token: str
    token_id: str
    role: str
    local_authority: str | None
    region: str | None
    started_at: dt.datetime
    seen_at: dt.datetime
    # Every form carries this; a POST without it is refused.
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Messages for the next page (e.g. "Review submitted"), shown once.
    flashes: list[tuple[str, str]] = field(default_factory=list)


class Sessions:
    def __init__(self, idle: dt.timedelta, lifetime: dt.timedelta,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._idle, self._lifetime, self._clock = idle, lifetime, clock
        self._by_id: dict[str, Session] = {}

    def start(self, token: str, identity: dict) -> Session:
        self._sweep()
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32), token=token, token_id=identity["token_id"], role=identity["role"],
            local_authority=identity.get("local_authority"), region=identity.get("region"),
            started_at=now, seen_at=now,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        now = self._clock()
        if now - session.seen_at > self._idle or now - session.started_at > self._lifetime:
            self.end(session.id)
            return None
        session.seen_at = now
        return session

    def end(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def end_token(self, token_id: str) -> None:
        """The token was refused (revoked): every session it opened ends."""
        for session in [s for s in self._by_id.values() if s.token_id == token_id]:
            self.end(session.id)

    def __len__(self) -> int:
        return len(self._by_id)

    def _sweep(self) -> None:
        now = self._clock()
        for session in [s for s in self._by_id.values()
                        if now - s.seen_at > self._idle or now - s.started_at > self._lifetime]:
            self.end(session.id)
