"""A bounded fuzz run (schemathesis) over each service's OpenAPI with each role's token:
no request may get a server error (5xx). Bad input is a 4xx naming the field.

Each (service, role) gets a fixed seed, at most EXAMPLES examples per operation and
SECONDS of run time, the four roles of a service side by side: about a minute in all.
A failure lists each operation that answered 5xx with a curl line that reproduces it.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

# A longer sweep by hand: SIR_FUZZ_EXAMPLES=50 SIR_FUZZ_SECONDS=60 SIR_FUZZ_SEED=7 pytest tests/faults/test_fuzz.py
EXAMPLES = int(os.environ.get("SIR_FUZZ_EXAMPLES", "10"))
SECONDS = int(os.environ.get("SIR_FUZZ_SECONDS", "10"))
SEED = os.environ.get("SIR_FUZZ_SEED", "13")
ROLES = ("council", "inspectorate", "sog", "admin")
ST = Path(sys.executable).with_name("st")


async def _fuzz(url: str, token: str, report: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(ST), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
        "--max-examples", str(EXAMPLES), "--max-time", str(SECONDS), "--seed", SEED, "--no-shrink",
        "--request-timeout", "10", "--header", f"Authorization: Bearer {token}",
        "--report", "junit", "--report-junit-path", str(report),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, SCHEMATHESIS_HOOKS="tests.faults.fuzz_hooks", NO_COLOR="1", COLUMNS="200"),
    )
    output, _ = await asyncio.wait_for(process.communicate(), SECONDS * 6 + 60)
    return process.returncode, output.decode(errors="replace")


def _server_errors(output: str) -> list[str]:
    """Each failure's operation, status and curl line, from schemathesis's FAILURES section."""
    if "= FAILURES =" not in output:
        return []
    failures = output.split("= FAILURES =", 1)[1].split("= WARNINGS =")[0].split("= SUMMARY =")[0]
    found = []
    for block in re.split(r"\n_{3,} ", failures):
        status = re.search(r"\[(5\d\d)\]", block)
        curl = re.search(r"^\s*(curl .*)$", block, re.M)
        if status:
            title = block.strip().splitlines()[0].strip(" _")
            found.append(f"{title}: {status.group(1)}\n    {curl.group(1) if curl else ''}")
    return found


@pytest.mark.parametrize("service", ["intake", "routing", "deadlines", "reporting"])
async def test_no_request_gets_a_server_error(fuzz_platform, service, tmp_path):
    url = fuzz_platform.services[service].url
    runs = await asyncio.gather(*(
        _fuzz(url, fuzz_platform.tokens[role], tmp_path / f"{role}.xml") for role in ROLES
    ))
    problems = {}
    for role, (code, output) in zip(ROLES, runs, strict=True):
        errors = _server_errors(output)
        if errors:
            problems[role] = errors
        elif code != 0 and "ST101" not in output:
            # Not a server error but the run itself failed (a schema it cannot read …).
            bad = re.findall(r"^(?:Errors|Failures):\n((?:  .*\n)+)", output, re.M)
            problems[role] = [f"the run failed ({code}): {''.join(bad) or output[-1500:]}"]
    assert not problems, "server errors found by fuzzing:\n" + "\n".join(
        f"[{role}] {line}" for role, lines in problems.items() for line in lines
    )
