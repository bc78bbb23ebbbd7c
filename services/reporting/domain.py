"""Reporting's pure arithmetic."""

from __future__ import annotations

from typing import Mapping

from shared.reference import LOCAL_AUTHORITIES


def counts_by_authority(counted: Mapping[str, int]) -> list[dict]:
    """Every one of the 32 authorities, zeros included, in reference order."""
    return [
        {"local_authority": slug, "name": la.name, "notifications": counted.get(slug, 0)}
        for slug, la in LOCAL_AUTHORITIES.items()
    ]
