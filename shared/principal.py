"""Who is calling: a token's role and scope. A plain value, so pure rules
(services/intake/domain.py) can take one; shared/auth.py makes them from tokens."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: str
    local_authority: str | None = None
    region: str | None = None
