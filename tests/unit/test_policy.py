"""The access policy's pure rules (shared/policy.py)."""

import pytest

from shared.auth import Principal
from shared.lifecycle import POSTED_BY
from shared.policy import ROUTES, Forbidden, check_may_post, check_route, list_scope, may_read_case

COUNCIL = Principal("t1", "council", local_authority="glasgow-city")
SOG = Principal("t2", "sog", region="north-strathclyde")
INSPECTORATE = Principal("t3", "inspectorate")
ADMIN = Principal("t4", "admin")


def test_a_route_without_a_decision_is_refused_to_every_role():
    for principal in (COUNCIL, SOG, INSPECTORATE, ADMIN):
        with pytest.raises(Forbidden, match="no access policy"):
            check_route(principal, "DELETE /v1/everything")


def test_route_roles_name_only_known_roles():
    assert all(roles and roles <= {"council", "sog", "inspectorate", "admin"} for roles in ROUTES.values())


def test_who_reads_a_case():
    assert may_read_case(COUNCIL, "glasgow-city", None) and not may_read_case(COUNCIL, "fife", None)
    assert may_read_case(SOG, "glasgow-city", "north-strathclyde") and not may_read_case(SOG, "inverclyde", None)
    assert may_read_case(INSPECTORATE, "fife", None) and may_read_case(ADMIN, "fife", None)


def test_who_posts_what():
    check_may_post(COUNCIL, "review.submitted", "glasgow-city", None)
    with pytest.raises(Forbidden, match="glasgow-city"):
        check_may_post(COUNCIL, "review.submitted", "fife", None)
    with pytest.raises(Forbidden, match="north-strathclyde"):
        check_may_post(SOG, "sog.decision_recorded", "inverclyde", "glasgow")
    for event_type in POSTED_BY:
        with pytest.raises(Forbidden, match="admin"):
            check_may_post(ADMIN, event_type, "fife", None)


def test_list_filters_outside_the_scope_are_refused_not_emptied():
    assert list_scope(COUNCIL, None) == ("glasgow-city", None)
    with pytest.raises(Forbidden, match="fife"):
        list_scope(COUNCIL, "fife")
    assert list_scope(SOG, "inverclyde") == ("inverclyde", "north-strathclyde")
    with pytest.raises(Forbidden, match="fife"):
        list_scope(SOG, "fife")
    assert list_scope(ADMIN, "fife") == ("fife", None) == list_scope(INSPECTORATE, "fife")
