import pytest

from shared.lifecycle import Refused, State, apply, fold
from tests.factories import mappa_notification, notification, review

LA = "glasgow-city"
NOTIFIED = ("incident.notified", LA, notification())


def _case(*events):
    return fold([NOTIFIED, *[(t, LA, d) for t, d in events]])


def test_a_notification_opens_a_case():
    case = fold([NOTIFIED])
    assert case.state is State.NOTIFIED and case.local_authority == LA and case.sog_region is None


def test_the_whole_review_path():
    case = _case(
        ("notification.criteria_assessed", {"meets_criteria": True}),
        ("review.submitted", review()),
        ("review.additional_info_requested", {}),
        ("review.additional_info_provided", {}),
        ("review.responded", {"outcome": "comprehensive_review_required"}),
    )
    assert case.state is State.AWAITING_REVIEW
    case = apply(case, "review.submitted", LA, review(review_type="comprehensive"))
    case = apply(case, "review.responded", LA, {"outcome": "concluded"})
    assert case.state is State.CONCLUDED
    case = apply(case, "case.closed", LA, {"reason": "concluded"})
    assert case.state is State.CLOSED and case.closed_reason == "concluded"


@pytest.mark.parametrize(
    "history, event, reason",
    [
        ([], ("review.submitted", review()), "before the case's notification"),
        ([NOTIFIED], ("incident.notified", notification()), "notified already"),
        ([NOTIFIED], ("review.responded", {"outcome": "concluded"}), "no review to respond to"),
        ([NOTIFIED], ("review.additional_info_provided", {}), "no additional information"),
        ([NOTIFIED, ("case.closed", LA, {"reason": "withdrawn"})], ("review.submitted", review()), "closed"),
        ([NOTIFIED, ("review.submitted", LA, review())], ("review.submitted", review()), "not awaited"),
        ([NOTIFIED], ("sog.decision_recorded", {"scr_under_mappa": True}), "MAPPA does not apply"),
    ],
)
def test_events_that_do_not_fit_are_refused(history, event, reason):
    with pytest.raises(Refused, match=reason):
        apply(fold(history), event[0], LA, event[1])


def test_criteria_not_met_closes_the_case():
    case = _case(("notification.criteria_assessed", {"meets_criteria": False}))
    assert case.state is State.CLOSED and case.closed_reason == "criteria_not_met"


def test_criteria_cannot_be_assessed_after_a_response():
    case = _case(("review.submitted", review()), ("review.responded", {"outcome": "comprehensive_review_required"}))
    with pytest.raises(Refused, match="before the first response"):
        apply(case, "notification.criteria_assessed", LA, {"meets_criteria": True})


def test_a_mappa_scr_supersedes_the_review():
    case = fold([("incident.notified", "inverclyde", mappa_notification())])
    assert case.sog_region == "north-strathclyde"
    case = apply(case, "sog.decision_recorded", "inverclyde", {"scr_under_mappa": True})
    assert case.closed_reason == "superseded_by_mappa_scr"


def test_the_sog_is_the_supervising_authoritys():
    data = mappa_notification(supervising_local_authority="fife")
    assert fold([("incident.notified", "inverclyde", data)]).sog_region == "fife"


def test_only_closing_follows_a_concluded_review():
    case = _case(("review.submitted", review()), ("review.responded", {"outcome": "concluded"}))
    with pytest.raises(Refused, match="only closing"):
        apply(case, "review.additional_info_requested", LA, {})
