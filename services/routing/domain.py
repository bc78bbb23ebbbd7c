"""Routing's pure rules: who must receive a notification (SPEC §5)."""

from __future__ import annotations

from typing import Mapping

from shared.lifecycle import sog_region_of

SCOTTISH_GOVERNMENT = "scottish-government"


def recipients(local_authority: str, notification: Mapping) -> list[str]:
    """The Scottish Government always; the SOG of the region too where MAPPA applies."""
    region = sog_region_of(local_authority, notification)
    return [SCOTTISH_GOVERNMENT] + ([f"sog:{region}"] if region else [])
