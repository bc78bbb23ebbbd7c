"""bench/ceilings.py's uniform row, which docs/performance.md quotes."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("ceilings", Path(__file__).parents[2] / "bench" / "ceilings.py")
assert _spec is not None and _spec.loader is not None
ceilings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceilings)


def test_a_row_is_path_figure_ceiling_ratio_target(capsys):
    line = ceilings.report_row("sir replay, 1,000 events", "500 events/s", "raw aiokafka produce 1,000 events/s",
                               ceilings.ratio(500, 1000), "≥ 0.5")
    assert line == "sir replay, 1,000 events | 500 events/s | raw aiokafka produce 1,000 events/s | 0.50 | ≥ 0.5"
    assert capsys.readouterr().out == line + "\n"


def test_a_row_without_a_ceiling_has_dashes_and_keeps_five_fields():
    line = ceilings.format_row("whole platform | 50/s", "p99 400 ms", None, ceilings.ratio(1, 0), "p99 < 500 ms")
    assert line == "whole platform / 50/s | p99 400 ms | — | — | p99 < 500 ms"
    assert len(line.split(" | ")) == len(ceilings.ROW_FIELDS)
