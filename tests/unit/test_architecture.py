"""The shape as code (docs/architecture.md): the pure rules import no I/O library.

The contract is import-linter's, in pyproject.toml [tool.importlinter]: the modules that
decide (`services/*/domain.py`, shared/lifecycle.py, shared/calendar.py, shared/topics.py,
shared/principal.py) import no HTTP, database or broker library, neither directly nor
through a project module. `lint-imports` runs the same check by hand.
"""

import tomllib
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).parents[2]
PYPROJECT = ROOT / "pyproject.toml"
IO_LIBRARIES = {"fastapi", "starlette", "asyncpg", "aiokafka", "faststream", "httpx"}


def _contract() -> dict:
    [contract] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return contract


def test_the_contract_covers_every_domain_module_and_every_io_library():
    contract = _contract()
    assert contract["type"] == "forbidden"
    assert IO_LIBRARIES <= set(contract["forbidden_modules"])
    assert {"services.*.domain", "shared.lifecycle", "shared.calendar"} <= set(contract["source_modules"])
    # Indirect imports count: a pure module may not reach an I/O library through a project module.
    assert not contract.get("allow_indirect_imports", False)
    assert len(list(ROOT.glob("services/*/domain.py"))) >= 4


def test_pure_modules_import_no_io_library(capsys):
    # In process and without a cache directory: a second or so.
    code = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "1 kept, 0 broken" in report
