"""The acceptance fixture is what its generator writes, and holds the seed's tables."""

from __future__ import annotations

import json
from collections import Counter

from tests.fixtures.build_seed_fixture import OUTPUT, TABLE_2, TABLE_3, build


def test_the_committed_fixture_is_what_the_generator_writes():
    committed = [json.loads(line) for line in OUTPUT.read_text().splitlines()]
    assert committed == build(), "run .venv/bin/python tests/fixtures/build_seed_fixture.py"


def test_the_fixture_holds_table_2_and_table_3():
    notified = [e for e in build() if e["event_type"] == "incident.notified"]
    assert Counter(e["local_authority"] for e in notified) == Counter(TABLE_2)
    assert Counter(e["data"]["incident_type"] for e in notified) == Counter(TABLE_3)
    assert sum(TABLE_2.values()) == sum(TABLE_3.values()) == len(notified) == 111
