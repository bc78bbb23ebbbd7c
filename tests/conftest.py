from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"
FAULTS = Path(__file__).parent / "faults"


def pytest_sessionfinish(session, exitstatus):
    # The services' log handler writes its held-back repeat counts at exit: write them
    # now, so the run's summary is the last thing it prints.
    from shared.logs import close_logging

    close_logging()


def pytest_collection_modifyitems(items):
    # Everything under tests/integration needs PostgreSQL and a broker: `-m "not integration"`
    # runs the pure tests alone.
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
        if FAULTS in Path(item.fspath).parents:  # real processes, killed and restarted
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
