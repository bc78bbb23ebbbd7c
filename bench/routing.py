"""Benchmark: from intake's 201 to the Scottish Government's `notification.forwarded`.

Starts its own Tansu, a fresh database on the local server and the services as processes
(as `sir up` does; see bench/pipeline.py), then for each channel (`topic`, then `webhook`
to a receiver started here) and each rate, posts notifications through intake at that
rate for `--seconds` (open loop), waits for every consumer to catch up before the next
phase, reads sir.routing.v1 and prints the p50/p99 latency from each
201 to its `notification.forwarded` for the Scottish Government (both ends timed in this
process). Target: p99 under 500 ms at 50/s.

    .venv/bin/python bench/routing.py                       # 50/s and 500/s, 20 s each
    .venv/bin/python bench/routing.py --rates 50 --seconds 5 --only-routing   # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from aiokafka import AIOKafkaConsumer
from pipeline import NOTIFICATION, bench_platform, percentile, wait_ready

from shared import devstack
from shared.auth import issue_token
from shared.db import create_pool
from shared.messaging import CASE_EVENTS, ROUTING_EVENTS
from shared.settings import SERVICES

SECRET_ENV = "SIR_BENCH_WEBHOOK_SECRET"
RECIPIENT = "scottish-government"


class _Receiver(ThreadingHTTPServer):
    request_queue_size = 512  # the default of 5 drops connections under load
    daemon_threads = True


class _Answer200(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

    def do_POST(self):  # http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Receiver:
    """The Scottish Government's webhook, answering 200 to every POST: a process of its
    own on 127.0.0.1, so that it does not compete with the posting loop for the GIL."""

    def __init__(self) -> None:
        port = devstack.free_port()
        self.url = f"http://127.0.0.1:{port}/sir"
        self.process = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Forwarded:
    """Reads sir.routing.v1 and notes when each case's forwarding to the SG arrives."""

    def __init__(self, bootstrap: str):
        self.arrived: dict[str, float] = {}
        self.consumer = AIOKafkaConsumer(
            ROUTING_EVENTS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=10,
        )
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event["event_type"] == "notification.forwarded" and event["data"]["recipient"] == RECIPIENT:
                        self.arrived.setdefault(event["case_id"], now)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


async def post_at_rate(
    client: httpx.AsyncClient, headers: dict, rate: float, seconds: float
) -> tuple[dict[str, float], float, int]:
    """Open loop: one POST every 1/rate s, whatever the answers' pace; returns each case's
    201 time, the rate achieved and how many POSTs failed."""
    accepted: dict[str, float] = {}
    failed = 0
    count = int(rate * seconds)
    started = time.perf_counter()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        nonlocal failed
        try:
            answer = await client.post("/v1/notifications", json=NOTIFICATION, headers=headers)
            answer.raise_for_status()
        except httpx.HTTPError:  # intake overwhelmed: counted, not measured
            failed += 1
            return
        accepted[answer.json()["case_id"]] = time.perf_counter()

    await asyncio.gather(*(one(i) for i in range(count)))
    return accepted, count / (time.perf_counter() - started), failed


async def settle(pool, consumers: list[str], posted: int, timeout: float) -> None:
    """Wait until every consumer applied all notifications posted so far, so that one
    phase's backlog does not slow the next one down."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [
            await pool.fetchval(f"SELECT count(*) FROM {s}.processed_events WHERE topic = $1", CASE_EVENTS)
            for s in consumers
        ]
        if min(done, default=posted) >= posted:
            return
        await asyncio.sleep(0.2)


async def run(
    args: argparse.Namespace, database_url: str, ports: dict[str, int], bootstrap: str, receiver: Receiver
) -> None:
    pool = await create_pool(database_url)
    await wait_ready(ports)
    council = {"Authorization": f"Bearer {await issue_token(pool, 'council', local_authority='glasgow-city')}"}
    admin = {"Authorization": f"Bearer {await issue_token(pool, 'admin')}"}
    consumers = [name for name in ports if name != "intake"]
    forwarded = Forwarded(bootstrap)
    await forwarded.start()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    posted = 0
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['intake']}", timeout=60, limits=limits) as intake,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['routing']}", timeout=30) as routing,
        ):
            print(f"{'channel':8} {'rate /s':>8} {'achieved':>9} {'201s':>6} {'failed':>6}"
                  f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'missing':>7}")
            for rate in args.rates:
                for channel in args.channels:
                    config = {"channel": channel} | (
                        {"url": receiver.url, "secret_env": SECRET_ENV} if channel == "webhook" else {}
                    )
                    (await routing.put(f"/v1/recipients/{RECIPIENT}", json=config, headers=admin)).raise_for_status()
                    accepted, achieved, failed = await post_at_rate(intake, council, rate, args.seconds)
                    posted += len(accepted)
                    deadline = time.monotonic() + args.wait
                    while time.monotonic() < deadline and not accepted.keys() <= forwarded.arrived.keys():
                        await asyncio.sleep(0.1)
                    latencies = [forwarded.arrived[c] - t for c, t in accepted.items() if c in forwarded.arrived]
                    missing = len(accepted) - len(latencies)
                    if latencies:
                        print(f"{channel:8} {rate:>8g} {achieved:>9.1f} {len(accepted):>6} {failed:>6} "
                              f"{percentile(latencies, .5) * 1000:>7.0f} {percentile(latencies, .99) * 1000:>7.0f} "
                              f"{max(latencies) * 1000:>7.0f} {missing:>7}")
                    else:
                        print(f"{channel:8} {rate:>8g} {achieved:>9.1f} {len(accepted):>6} {failed:>6}"
                              f"  none forwarded in {args.wait:g}s")
                    await settle(pool, consumers, posted, args.wait)
    finally:
        await forwarded.stop()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 500], help="notifications per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long to post at each rate")
    parser.add_argument("--channels", nargs="+", choices=("topic", "webhook"), default=["topic", "webhook"])
    parser.add_argument("--wait", type=float, default=60, help="longest wait for the last forwardings")
    parser.add_argument("--only-routing", action="store_true", help="start intake and routing only")
    parser.add_argument("--receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the webhook's process
    args = parser.parse_args()
    if args.receiver:
        _Receiver(("127.0.0.1", args.receiver), _Answer200).serve_forever()
        return

    services = ("intake", "routing") if args.only_routing else SERVICES
    receiver = Receiver()
    try:
        secret = "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()
        with bench_platform({name: name for name in services}, env={SECRET_ENV: secret}) as (
            database_url, bootstrap, ports,
        ):
            asyncio.run(run(args, database_url, ports, bootstrap, receiver))
    finally:
        receiver.stop()

if __name__ == "__main__":
    main()
