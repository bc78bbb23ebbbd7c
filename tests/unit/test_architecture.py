"""The shape as code (docs/architecture.md): the pure rules import no I/O library.

The contract is import-linter's, in pyproject.toml [tool.importlinter]: the modules that
decide (`services/*/domain.py`, shared/lifecycle.py, shared/calendar.py, shared/topics.py,
shared/principal.py) import no HTTP, database or broker library, neither directly nor
through a project module. `lint-imports` runs the same check by hand.
"""

import re
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


def test_every_function_docs_architecture_names_for_a_rule_exists():
    """The table "Where each rule is decided" stays true: each row's file exists and
    defines each name it gives (a newcomer follows it to the one deciding function)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Where each rule is decided")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 15
    for row in rows:
        decided_by = row.split("|")[2]
        names = re.findall(r"`([^`]+)`", decided_by)
        path = ROOT / names[0]
        if not path.suffix:  # "domain.parse_rules": the file is the row's first one
            continue
        source = path.read_text()
        for name in names[1:]:
            if "/" in name:  # another file named in passing
                source += (ROOT / name).read_text()
                continue
            last = name.split(".")[-1]
            assert re.search(rf"\b{re.escape(last)}\b", source), f"{row}: {name} not in {names[0]}"
