"""Reference data of SPEC §2: local authorities, MAPPA regions, vocabularies and roles.

The data lives in the CSV and JSON files beside this module, so it can be edited without
touching code. It is read and validated once, at import: a bad edit fails every service
at start with a clear ValueError rather than surfacing later as a wrong routing.
The parsing and checking functions take plain data, so tests can feed them their own.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files

__all__ = [
    "LABELS",
    "LOCAL_AUTHORITIES",
    "LOCAL_AUTHORITY_SLUGS",
    "MAPPA_REGIONS",
    "ROLES",
    "VOCABULARIES",
    "LocalAuthority",
    "RegionIndex",
    "build_region_index",
    "label",
    "local_authority_by_gss",
    "mappa_region_of",
    "region_in_force",
]

EXPECTED_AUTHORITIES = 32
VOCABULARY_KEYS = (
    "criterion", "incident_type", "order_type", "subject_role", "review_type",
    "sign_off_role", "risk_tool", "finding", "role",
)
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


@dataclass(frozen=True)
class LocalAuthority:
    slug: str
    name: str
    gss_code: str


# One (effective_from, local authority slug -> region slug) pair per grouping, oldest first.
RegionIndex = tuple[tuple[dt.date, Mapping[str, str]], ...]


def _read(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def parse_local_authorities(rows: Iterable[Mapping[str, str]]) -> dict[str, LocalAuthority]:
    authorities = [LocalAuthority(r["slug"], r["name"], r["gss_code"]) for r in rows]
    if len(authorities) != EXPECTED_AUTHORITIES:
        raise ValueError(f"expected {EXPECTED_AUTHORITIES} local authorities, found {len(authorities)}")
    by_slug = {a.slug: a for a in authorities}
    if len(by_slug) != len(authorities):
        raise ValueError("local authority slugs are not unique")
    if len({a.gss_code for a in authorities}) != len(authorities):
        raise ValueError("local authority GSS codes are not unique")
    return by_slug


def parse_former_codes(
    rows: Iterable[Mapping[str, str]], authorities: Mapping[str, LocalAuthority]
) -> dict[str, LocalAuthority]:
    """GSS code (current or former) -> authority; older data may carry a pre-2019 code."""
    by_code = {a.gss_code: a for a in authorities.values()}
    for r in rows:
        code, slug = r["gss_code"], r["slug"]
        if code in by_code:
            raise ValueError(f"former GSS code {code} is already in use")
        if slug not in authorities:
            raise ValueError(f"former GSS code {code} names unknown local authority {slug!r}")
        by_code[code] = authorities[slug]
    return by_code


def build_region_index(
    groupings: Sequence[Mapping], regions: Iterable[str], authorities: Iterable[str]
) -> RegionIndex:
    """Check each grouping puts every authority in exactly one known region; index by date.

    `groupings` is the parsed `groupings` list of mappa_regions.json.
    """
    regions, authorities = set(regions), set(authorities)
    index: dict[dt.date, dict[str, str]] = {}
    if not groupings:
        raise ValueError("no MAPPA region grouping given")
    for grouping in groupings:
        when = dt.date.fromisoformat(grouping["effective_from"])
        if when in index:
            raise ValueError(f"two MAPPA region groupings are effective from {when}")
        region_of: dict[str, str] = {}
        for region, members in grouping["regions"].items():
            if region not in regions:
                raise ValueError(f"grouping of {when}: unknown MAPPA region {region!r}")
            for la in members:
                if la not in authorities:
                    raise ValueError(f"grouping of {when}: unknown local authority {la!r} in {region!r}")
                if la in region_of:
                    raise ValueError(
                        f"grouping of {when}: {la!r} is in both {region_of[la]!r} and {region!r}"
                    )
                region_of[la] = region
        missing = sorted(authorities - region_of.keys())
        if missing:
            raise ValueError(f"grouping of {when}: no MAPPA region for {', '.join(missing)}")
        index[when] = region_of
    return tuple(sorted(index.items()))


def region_in_force(index: RegionIndex, local_authority: str, on: dt.date | None = None) -> str:
    """The region under the grouping with the latest effective_from <= on (None: today)."""
    # A datetime is a date but does not compare with one; the day is what counts.
    day = on.date() if isinstance(on, dt.datetime) else on or dt.date.today()
    position = bisect_right([when for when, _ in index], day)
    if position == 0:
        raise KeyError(f"no MAPPA region grouping in force on {on}")
    region_of = index[position - 1][1]
    if local_authority not in region_of:
        raise KeyError(f"unknown local authority {local_authority!r}")
    return region_of[local_authority]


def parse_labels(data: Mapping[str, object], vocabularies: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
    """The label file: {vocabulary: {value: label}}; every vocabulary value needs a label
    and a label names no value the vocabulary lacks (keys starting `_` are comments)."""
    labels: dict[str, dict[str, str]] = {}
    for key, values in vocabularies.items():
        given = data.get(key)
        if not isinstance(given, Mapping):
            raise ValueError(f"labels: no labels for vocabulary {key!r}")
        if missing := [v for v in values if not isinstance(given.get(v), str) or not given[v].strip()]:
            raise ValueError(f"labels: vocabulary {key!r} has values without a label: {missing}")
        if unknown := sorted(set(given) - set(values)):
            raise ValueError(f"labels: vocabulary {key!r} has no values {unknown}")
    for key, given in data.items():
        if not key.startswith("_"):
            if not isinstance(given, Mapping) or not all(isinstance(v, str) for v in given.values()):
                raise ValueError(f"labels: {key!r} is not a table of value -> label")
            labels[key] = dict(given)
    return labels


def parse_vocabularies(data: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    missing = [k for k in VOCABULARY_KEYS if k not in data]
    if missing:
        raise ValueError(f"vocabularies missing: {', '.join(missing)}")
    vocabularies = {}
    for key, values in data.items():
        if not values:
            raise ValueError(f"vocabulary {key!r} is empty")
        bad = [v for v in values if not _SNAKE.match(v)]
        if bad:
            raise ValueError(f"vocabulary {key!r} has values that are not snake_case: {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"vocabulary {key!r} has duplicate values")
        vocabularies[key] = tuple(values)
    return vocabularies


LOCAL_AUTHORITIES: dict[str, LocalAuthority] = parse_local_authorities(
    csv.DictReader(io.StringIO(_read("local_authorities.csv")))
)
LOCAL_AUTHORITY_SLUGS: tuple[str, ...] = tuple(LOCAL_AUTHORITIES)
_BY_GSS = parse_former_codes(csv.DictReader(io.StringIO(_read("former_gss_codes.csv"))), LOCAL_AUTHORITIES)

_mappa = json.loads(_read("mappa_regions.json"))
MAPPA_REGIONS: dict[str, str] = dict(_mappa["regions"])
_REGION_INDEX = build_region_index(_mappa["groupings"], MAPPA_REGIONS, LOCAL_AUTHORITY_SLUGS)

VOCABULARIES: dict[str, tuple[str, ...]] = parse_vocabularies(json.loads(_read("vocabularies.json")))
ROLES: tuple[str, ...] = VOCABULARIES["role"]
# How each code reads in a report and the API (labels.json): the published report's wording.
LABELS: dict[str, dict[str, str]] = parse_labels(json.loads(_read("labels.json")), VOCABULARIES)


def label(kind: str, value: str) -> str:
    """The published wording of `value` of the vocabulary (or `rule`) `kind`; the value
    itself where the file has none (a code from outside the vocabularies)."""
    return LABELS.get(kind, {}).get(value, value)


def local_authority_by_gss(code: str) -> LocalAuthority:
    """The authority for a current or former GSS code; KeyError for any other code."""
    return _BY_GSS[code]


def mappa_region_of(local_authority: str, on: dt.date | None = None) -> str:
    """The MAPPA region of `local_authority` under the grouping in force on `on` (None: today's)."""
    return region_in_force(_REGION_INDEX, local_authority, on)
