"""Categorisation quality (issue 16): what a notification leaves missing or vague.

One pure function, `gaps`, used by intake (the 201 answer's `warnings`; the event is still
accepted) and by reporting (counted per authority, listed in the quarterly report for
follow-up), so the two never disagree. docs/reports.md lists the rules.

MAPPA "applies without category or level" is not among them: the event model refuses it
(422, shared/events.py Mappa), so no stored notification can have it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.calendar import Timescale, judge

# Incident types of violence or a sexual offence: for these the notification should say
# whether domestic abuse aggravated the incident (true or false), not leave it unknown.
VIOLENT_OR_SEXUAL = frozenset({
    "murder_perpetrator", "murder_victim", "attempted_murder", "sexual_offence", "child_abuse_historical",
    "assault_and_robbery", "serious_assault", "assault_severe_injury_attempted_murder",
    "death_from_serious_assault", "assault_weapon_breach_of_peace", "stalking", "abduction",
})
NOTIFICATION_WORKING_DAYS = 5  # SPEC §4: a notification later than this should say when the council became aware
_NOTIFICATION_TIMESCALE = Timescale(working_days=NOTIFICATION_WORKING_DAYS)

# gap -> why it matters (the warning's text)
GAPS = {
    "incident_type_detail": "incident_type is 'other' with no incident_type_detail saying what happened",
    "domestic_abuse_aggravated": "domestic_abuse_aggravated is not stated (true or false) for a violent or sexual"
                                 " incident type",
    "became_aware_date": "the notification is later than 5 working days after the incident and gives no"
                         " became_aware_date",
}


def gaps(data: Any, received_at: dt.datetime) -> list[str]:
    """The gaps (keys of GAPS, in that order) of an incident.notified's data received at `received_at`."""
    found = []
    if data.incident_type == "other" and not (data.incident_type_detail or "").strip():
        found.append("incident_type_detail")
    if data.incident_type in VIOLENT_OR_SEXUAL and data.domestic_abuse_aggravated is None:
        found.append("domestic_abuse_aggravated")
    if data.became_aware_date is None:
        taken = judge(data.incident_date, _NOTIFICATION_TIMESCALE, received_at).working_days_taken
        if taken is not None and taken > NOTIFICATION_WORKING_DAYS:  # never None: a stop is given
            found.append("became_aware_date")
    return found


def warnings(data: Any, received_at: dt.datetime) -> list[dict[str, str]]:
    """The gaps as the 201 answer lists them: the field and why."""
    return [{"field": gap, "reason": GAPS[gap]} for gap in gaps(data, received_at)]
