"""Schemathesis hooks for the fuzz run (SCHEMATHESIS_HOOKS=tests.faults.fuzz_hooks):
`POST /v1/import` takes NDJSON, which schemathesis cannot send by itself."""

from __future__ import annotations

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(_context, value) -> bytes:
    if isinstance(value, bytes):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    # Lone surrogates too: the import must refuse them by line, not fail.
    return text.encode("utf-8", "surrogatepass")
