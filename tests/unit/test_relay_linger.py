"""The outbox relay's linger (shared/outbox.py): under load a relay given one starts its
batches that far apart; after a quiet spell, or with none, it publishes as soon as woken.
The relay's sleep is recorded, not waited for."""

from __future__ import annotations

import time

import pytest

from shared import outbox
from shared.outbox import LINGER_FROM_ROWS, OutboxRelay


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(outbox.asyncio, "sleep", sleep)  # the asyncio module the relay sleeps through
    return asked


async def _woken_after(last_batch: int, linger: float) -> OutboxRelay:
    relay = OutboxRelay(None, "lingertest", "127.0.0.1:1", linger_seconds=linger)  # type: ignore[arg-type]
    relay._last_batch, relay._batch_started = last_batch, time.monotonic()
    relay._wake.set()  # rows committed meanwhile
    await relay._wait_for_rows()
    return relay


async def test_under_load_the_next_batch_waits_out_the_linger(slept):
    relay = await _woken_after(LINGER_FROM_ROWS, linger=0.2)
    assert len(slept) == 1 and 0.1 < slept[0] <= 0.2
    assert not relay._wake.is_set()  # what came in meanwhile goes in the batch that follows


@pytest.mark.parametrize(("last_batch", "linger"), [(LINGER_FROM_ROWS - 1, 0.2), (1, 0.2), (500, 0.0)])
async def test_after_a_quiet_spell_or_without_a_linger_it_publishes_at_once(slept, last_batch, linger):
    await _woken_after(last_batch, linger)
    assert slept == []

