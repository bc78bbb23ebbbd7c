"""Routing's subscribers: each live notification is owed to its recipients, once."""

from __future__ import annotations

from typing import cast

import asyncpg

from services.routing import repository
from services.routing.delivery import deliver_by_topic
from services.routing.domain import recipients
from shared.consumer import Delivery
from shared.events import Envelope, IncidentNotified


async def on_case_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    # Imported history was forwarded when it happened (its notification.forwarded
    # records come with it): nothing is owed.
    if event.event_type != "incident.notified" or delivery.imported:
        return
    notified = cast(IncidentNotified, event)  # the consumer parsed it by its event_type
    wake = False
    configs = await repository.configs(conn)
    for recipient in recipients(notified.local_authority, notified.data.model_dump(mode="json")):
        row = await repository.owe(conn, notified, recipient)
        if row is None:
            continue  # owed already: the same notification again
        config = configs.get(recipient)
        if config is not None and config.channel == "topic":
            # Delivered in this very transaction: the outbox publishes it.
            await deliver_by_topic(conn, row)
        else:
            wake = True  # the delivery loop POSTs it (or seeds the recipient first)
    if wake:
        await repository.wake_delivery_loop(conn)
