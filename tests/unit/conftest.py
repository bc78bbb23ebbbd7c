"""The fast layer: everything here runs in memory, in seconds, without PostgreSQL, a
broker or a service process (those are tests/integration's and tests/faults').

`make test` runs this layer first (`-m "not integration"`), then the integration layer.
To keep it honest, a test here that opens a network connection fails at once."""

import socket

import pytest


class NetworkInTheFastLayer(AssertionError):
    pass


def _refuse(self, address, *args, **kwargs):
    raise NetworkInTheFastLayer(
        f"a fast-layer test connected to {address!r}: real PostgreSQL, broker and HTTP checks belong in tests/integration"
    )


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
