"""The reference data of SPEC §2 and the pure logic that loads it."""

import datetime as dt

import pytest

from shared.reference import (
    LOCAL_AUTHORITIES,
    LOCAL_AUTHORITY_SLUGS,
    MAPPA_REGIONS,
    ROLES,
    VOCABULARIES,
    build_region_index,
    local_authority_by_gss,
    mappa_region_of,
    parse_local_authorities,
    parse_vocabularies,
    region_in_force,
)

SPEC_SLUGS = (
    "aberdeen-city aberdeenshire angus argyll-and-bute city-of-edinburgh clackmannanshire "
    "dumfries-and-galloway dundee-city east-ayrshire east-dunbartonshire east-lothian "
    "east-renfrewshire falkirk fife glasgow-city highland inverclyde midlothian moray "
    "na-h-eileanan-siar north-ayrshire north-lanarkshire orkney-islands perth-and-kinross "
    "renfrewshire scottish-borders shetland-islands south-ayrshire south-lanarkshire stirling "
    "west-dunbartonshire west-lothian"
).split()
SPEC_CODES = (
    "S12000033 S12000034 S12000041 S12000035 S12000036 S12000005 S12000006 S12000042 "
    "S12000008 S12000045 S12000010 S12000011 S12000014 S12000047 S12000049 S12000017 "
    "S12000018 S12000019 S12000020 S12000013 S12000021 S12000050 S12000023 S12000048 "
    "S12000038 S12000026 S12000027 S12000028 S12000029 S12000030 S12000039 S12000040"
).split()


def test_the_32_authorities_in_spec_order_with_their_gss_codes():
    assert LOCAL_AUTHORITY_SLUGS == tuple(SPEC_SLUGS)
    assert list(LOCAL_AUTHORITIES) == SPEC_SLUGS
    assert [a.gss_code for a in LOCAL_AUTHORITIES.values()] == SPEC_CODES
    for slug, code in zip(SPEC_SLUGS, SPEC_CODES, strict=True):
        assert local_authority_by_gss(code).slug == slug


def test_official_names():
    names = {slug: a.name for slug, a in LOCAL_AUTHORITIES.items()}
    assert names["aberdeen-city"] == "Aberdeen City"
    assert names["city-of-edinburgh"] == "City of Edinburgh"
    assert names["na-h-eileanan-siar"] == "Na h-Eileanan Siar"
    assert names["perth-and-kinross"] == "Perth and Kinross"
    assert names["scottish-borders"] == "Scottish Borders"


@pytest.mark.parametrize(
    "code, slug",
    [
        ("S12000015", "fife"),
        ("S12000024", "perth-and-kinross"),
        ("S12000044", "north-lanarkshire"),
        ("S12000046", "glasgow-city"),
    ],
)
def test_former_gss_codes_map_to_their_authority(code, slug):
    assert local_authority_by_gss(code) is LOCAL_AUTHORITIES[slug]


def test_unknown_gss_code_is_a_key_error():
    with pytest.raises(KeyError):
        local_authority_by_gss("S12000999")


def test_every_authority_has_a_known_region():
    for slug in LOCAL_AUTHORITY_SLUGS:
        assert mappa_region_of(slug) in MAPPA_REGIONS
    assert set(MAPPA_REGIONS) == {
        "glasgow", "lanarkshire", "north-strathclyde", "south-west-scotland", "fife",
        "forth-valley", "tayside", "lothian-and-borders", "grampian", "highland-and-islands",
    }
    # Every region has at least one authority.
    assert {mappa_region_of(s) for s in LOCAL_AUTHORITY_SLUGS} == set(MAPPA_REGIONS)


@pytest.mark.parametrize(
    "slug, region",
    [
        ("glasgow-city", "glasgow"),
        ("south-lanarkshire", "lanarkshire"),
        ("inverclyde", "north-strathclyde"),
        ("west-dunbartonshire", "north-strathclyde"),
        ("dumfries-and-galloway", "south-west-scotland"),
        ("fife", "fife"),
        ("falkirk", "forth-valley"),
        ("perth-and-kinross", "tayside"),
        ("scottish-borders", "lothian-and-borders"),
        ("moray", "grampian"),
        ("orkney-islands", "highland-and-islands"),
        ("na-h-eileanan-siar", "highland-and-islands"),
    ],
)
def test_spec_region_examples(slug, region):
    assert mappa_region_of(slug) == region
    assert mappa_region_of(slug, dt.date(2024, 6, 1)) == region


def test_unknown_authority_is_a_key_error():
    with pytest.raises(KeyError):
        mappa_region_of("gotham")


def test_vocabularies_hold_the_spec_values_in_order():
    assert VOCABULARIES["criterion"] == (
        "charged_with_serious_offence", "practice_concerns", "died_or_seriously_injured",
    )
    assert VOCABULARIES["subject_role"] == ("perpetrator", "victim")
    assert VOCABULARIES["review_type"] == ("initial_analysis", "comprehensive", "reflective_learning")
    assert VOCABULARIES["risk_tool"] == ("lscmi", "sa07", "sara", "rm2000", "other")
    assert VOCABULARIES["sign_off_role"][3] == "head_of_justice_social_work"
    assert len(VOCABULARIES["incident_type"]) == 19
    assert VOCABULARIES["incident_type"][0] == "murder_perpetrator"
    assert VOCABULARIES["incident_type"][-1] == "other"
    assert len(VOCABULARIES["order_type"]) == 9
    assert "order_for_lifelong_restriction" in VOCABULARIES["order_type"]
    assert len(VOCABULARIES["finding"]) == 11
    assert "lscmi_not_exported_to_community" in VOCABULARIES["finding"]
    assert ROLES == ("council", "inspectorate", "sog", "admin")


# --- the pure logic, with given data ---------------------------------------------------

AUTHORITIES = ("a", "b", "c")
REGIONS = ("north", "south")
OLD = {"effective_from": "2000-01-01", "regions": {"north": ["a", "b"], "south": ["c"]}}
NEW = {"effective_from": "2025-04-01", "regions": {"north": ["a"], "south": ["b", "c"]}}


def test_effective_dating_picks_the_grouping_in_force():
    # Given out of order on purpose: the index sorts by date.
    index = build_region_index([NEW, OLD], REGIONS, AUTHORITIES)
    assert region_in_force(index, "b", dt.date(2025, 3, 31)) == "north"
    assert region_in_force(index, "b", dt.date(2025, 4, 1)) == "south"
    assert region_in_force(index, "b", dt.datetime(2025, 4, 1, 9, 30)) == "south"
    with pytest.raises(KeyError):
        region_in_force(index, "b", dt.date(1999, 12, 31))


def test_none_means_the_grouping_in_force_today():
    future = {"effective_from": "2999-01-01", "regions": {"north": ["a", "b", "c"]}}
    index = build_region_index([OLD, NEW, future], REGIONS, AUTHORITIES)
    assert region_in_force(index, "b") == "south"
    assert region_in_force(index, "c", dt.date(2999, 1, 1)) == "north"


@pytest.mark.parametrize(
    "grouping, message",
    [
        ({"north": ["a", "b"]}, "no MAPPA region for c"),
        ({"north": ["a", "b"], "south": ["b", "c"]}, "'b' is in both"),
        ({"north": ["a", "b"], "east": ["c"]}, "unknown MAPPA region 'east'"),
        ({"north": ["a", "b", "z"], "south": ["c"]}, "unknown local authority 'z'"),
    ],
)
def test_bad_groupings_are_refused(grouping, message):
    with pytest.raises(ValueError, match=message):
        build_region_index([{"effective_from": "2000-01-01", "regions": grouping}], REGIONS, AUTHORITIES)


def test_bad_authority_lists_are_refused():
    rows = [{"slug": f"la-{i}", "name": f"LA {i}", "gss_code": f"S{i:08}"} for i in range(32)]
    assert len(parse_local_authorities(rows)) == 32
    with pytest.raises(ValueError, match="expected 32"):
        parse_local_authorities(rows[:31])
    with pytest.raises(ValueError, match="slugs are not unique"):
        parse_local_authorities(rows[:31] + [dict(rows[31], slug="la-0")])
    with pytest.raises(ValueError, match="GSS codes are not unique"):
        parse_local_authorities(rows[:31] + [dict(rows[31], gss_code="S00000000")])


def test_bad_vocabularies_are_refused():
    good = {key: list(values) for key, values in VOCABULARIES.items()}
    with pytest.raises(ValueError, match="missing: role"):
        parse_vocabularies({k: v for k, v in good.items() if k != "role"})
    with pytest.raises(ValueError, match="duplicate"):
        parse_vocabularies(good | {"risk_tool": ["sara", "sara"]})
    with pytest.raises(ValueError, match="snake_case"):
        parse_vocabularies(good | {"risk_tool": ["SARA"]})
