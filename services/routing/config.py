"""The recipients file: every recipient's channel, before an operator changes it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from services.routing.domain import ALL_RECIPIENTS, RecipientConfig
from shared.settings import Settings

DEFAULT_FILE = Path(__file__).parent / "recipients.toml"


def recipients_file(settings: Settings) -> Path:
    return Path(settings.routing_recipients_file) if settings.routing_recipients_file else DEFAULT_FILE


def load(path: Path, allow_http: bool = False) -> dict[str, RecipientConfig]:
    """Every recipient's configuration: the file's defaults, then its own section."""
    document = tomllib.loads(path.read_text())
    defaults = document.get("defaults", {})
    sections = document.get("recipients", {})
    unknown = set(sections) - set(ALL_RECIPIENTS)
    if unknown:
        raise ValueError(f"{path}: unknown recipients {sorted(unknown)}; known: {', '.join(ALL_RECIPIENTS)}")
    configs = {}
    for recipient in ALL_RECIPIENTS:
        try:
            config = RecipientConfig(**(defaults | sections.get(recipient, {})))
            config.check_transport(allow_http)
        except ValueError as error:
            raise ValueError(f"{path}: recipient {recipient}: {error}") from error
        configs[recipient] = config
    return configs
