-- Counts kept by month (issue 15): each statement a report's counts come from
-- (services/reporting/repository.py AGGREGATES) is kept grouped by the month of its rows'
-- date too, one table each (its output columns and `month`). A report over years adds up
-- the months it covers whole and reads rows only for the days left over, the months
-- changed since they were summarised, and as of a moment past. The columns are the
-- statements' own: a count added to them needs a column here too.
CREATE TABLE {schema}.report_notification_totals (
    month                     date    NOT NULL,
    local_authority           text    NOT NULL,
    quarter                   date    NOT NULL,
    notifications             bigint  NOT NULL,
    in_time                   bigint  NOT NULL,
    late                      bigint  NOT NULL,
    meets_criteria            bigint  NOT NULL,
    criteria_not_met          bigint  NOT NULL,
    signed_off_senior         bigint  NOT NULL,
    domestic_abuse_aggravated bigint  NOT NULL,
    mappa                     bigint  NOT NULL,
    historical                bigint  NOT NULL,
    categorisation_incomplete bigint  NOT NULL,
    gap_incident_type_detail  bigint  NOT NULL,
    gap_domestic_abuse_aggravated bigint NOT NULL,
    gap_became_aware_date     bigint  NOT NULL
);
CREATE INDEX report_notification_totals_by_month ON {schema}.report_notification_totals (month);

-- Grouping sets: a row's keys outside its set are NULL (g_*: 1).
CREATE TABLE {schema}.report_notification_groups (
    month              date     NOT NULL,
    g_incident_type    integer  NOT NULL,
    g_criterion        integer  NOT NULL,
    g_signed_off_by    integer  NOT NULL,
    g_order_type       integer  NOT NULL,
    g_working_days_taken integer NOT NULL,
    g_mappa_applies    integer  NOT NULL,
    incident_type      text,
    criterion          text,
    signed_off_by      text,
    order_type         text,
    working_days_taken integer,
    mappa_applies      boolean,
    mappa_category     smallint,
    mappa_level        smallint,
    notifications      bigint   NOT NULL
);
CREATE INDEX report_notification_groups_by_month ON {schema}.report_notification_groups (month);

-- Every forward judged (as at no moment): a report reads a month from here only once the
-- last of its forwards has fallen due by the report's moment (report_months.settled_at).
CREATE TABLE {schema}.report_forward_totals (
    month                date   PRIMARY KEY,
    sg_forwarded         bigint NOT NULL,
    sg_forwarded_in_time bigint NOT NULL,
    sg_forward_judged    bigint NOT NULL
);

CREATE TABLE {schema}.report_review_totals (
    month                         date   NOT NULL,
    review_type                   text   NOT NULL,
    reviews                       bigint NOT NULL,
    signed_off_senior             bigint NOT NULL,
    reviewer_independent          bigint NOT NULL,
    risk_assessment_completed     bigint NOT NULL,
    risk_assessment_up_to_date    bigint NOT NULL,
    risk_management_plan_in_place bigint NOT NULL,
    risk_management_plan_not_in_place bigint NOT NULL,
    risk_management_plan_informed bigint NOT NULL,
    order_reviews_referenced      bigint NOT NULL,
    good_practice_identified      bigint NOT NULL,
    in_time                       bigint NOT NULL,
    with_info_requests            bigint NOT NULL,
    info_requests                 bigint NOT NULL,
    PRIMARY KEY (month, review_type)
);

-- By the month of the response (responded_on).
CREATE TABLE {schema}.report_response_totals (
    month                  date   NOT NULL,
    review_type            text   NOT NULL,
    responses              bigint NOT NULL,
    in_time                bigint NOT NULL,
    concluded              bigint NOT NULL,
    comprehensive_required bigint NOT NULL,
    iar_judged             bigint NOT NULL,
    iar_appropriate        bigint NOT NULL,
    quality_judged         bigint NOT NULL,
    high_quality           bigint NOT NULL,
    PRIMARY KEY (month, review_type)
);

CREATE TABLE {schema}.report_review_lists (
    month           date    NOT NULL,
    g_tool          integer NOT NULL,
    finding         text,
    tool            text,
    local_authority text,
    year            integer,
    reviews         bigint  NOT NULL
);
CREATE INDEX report_review_lists_by_month ON {schema}.report_review_lists (month);

-- The months summarised, and when the last forward of each month's notifications falls
-- due (NULL: no notification).
CREATE TABLE {schema}.report_months (
    month      date PRIMARY KEY,
    settled_at timestamptz
);

-- What writers changed since: the months of the rows' dates, and the cases whose first
-- forward to the Scottish Government changed (counted in their notification's month).
-- One row a transaction, only ever inserted, so writers never wait on each other; a
-- report reads the months named here from their rows until they are summarised again.
CREATE TABLE {schema}.report_stale (
    months date[] NOT NULL DEFAULT '{}',
    cases  uuid[] NOT NULL DEFAULT '{}'
);

-- The rows already here: every month they fall in is to be summarised (the first report
-- does it); until then reports read them as before.
INSERT INTO {schema}.report_stale (months)
SELECT array_agg(DISTINCT month) FROM (
    SELECT date_trunc('month', received_on::timestamp)::date AS month FROM {schema}.notifications
    UNION ALL SELECT date_trunc('month', received_on::timestamp)::date FROM {schema}.reviews
    UNION ALL SELECT date_trunc('month', responded_on::timestamp)::date FROM {schema}.reviews
    WHERE responded_on IS NOT NULL
) m HAVING count(*) > 0;
