"""The container's health check: is the service this container runs ready?

`python -m services.healthcheck [SERVICE]` asks http://127.0.0.1:<port>/readyz and exits
0 on 200, 1 otherwise. Without SERVICE it reads the service from the container's main
process (`sir serve <service>`), so one HEALTHCHECK in the Dockerfile serves all four.
Standard library only: it runs every few seconds.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path

from shared.settings import SERVICES, Settings


def served_service(cmdline: list[str]) -> str | None:
    """The service a `sir serve <service>` command line runs (None for another command)."""
    for word, following in pairwise(cmdline):
        if word == "serve" and following in SERVICES:
            return following
    return None


def ready(service: str, timeout: float = 2.0) -> bool:
    url = f"http://127.0.0.1:{Settings().port_of(service)}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    if argv:
        service: str | None = argv[0]
    else:
        service = served_service(Path("/proc/1/cmdline").read_bytes().decode().split("\0"))
    if service not in SERVICES:
        print(f"healthcheck: no service to check ({service!r})", file=sys.stderr)
        return 1
    return 0 if ready(service) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
