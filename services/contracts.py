"""The published contracts, generated from the code: the AsyncAPI document of every topic
(`docs/asyncapi.json`) and each service's OpenAPI document (`docs/openapi-<service>.json`).

`sir docs` (or `python -m services.contracts`) writes them; `sir docs --check` and
`tests/integration/test_contracts.py` fail when the committed ones differ. Output is
deterministic: sorted keys, no timestamps, nothing from the environment.

The AsyncAPI document is built by services/asyncapi.py (one channel per topic, one
named message per event type); the OpenAPI documents by each service's FastAPI app.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from services import asyncapi as asyncapi_document
from shared.settings import SERVICES, Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def asyncapi() -> dict:
    return asyncapi_document.document()


def openapi(service: str) -> dict:
    app = importlib.import_module(f"services.{service}.app").build(Settings())
    return app.openapi()


def documents() -> dict[Path, dict]:
    return {DOCS / "asyncapi.json": asyncapi()} | {DOCS / f"openapi-{name}.json": openapi(name) for name in SERVICES}


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check() -> list[Path]:
    """The committed documents that differ from what the code generates."""
    return [
        path for path, document in documents().items()
        if not path.exists() or path.read_text() != render(document)
    ]


def write() -> list[Path]:
    """Write the documents that changed; returns their paths."""
    written = []
    for path, document in documents().items():
        text = render(document)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path}")
