"""The four SIR services and the `sir` tool."""

# The platform's release (CHANGELOG.md); pyproject.toml reads it from here.
__version__ = "0.2.0"


def version_line() -> str:
    """What `sir --version` prints: the release and the version of each contract."""
    from services import asyncapi
    from shared import openapi

    return f"sir {__version__} (events {asyncapi.VERSION}, http api {openapi.VERSION}, webhooks {WEBHOOKS_VERSION})"


# The webhook contract (docs/routing.md): 2 since Standard Webhooks signatures.
WEBHOOKS_VERSION = "2.0.0"
