"""The audit API under load: 1,000,000 history lines in PostgreSQL, `knm audit-api` in a
second process, 32 concurrent clients for 20 s.

    eval "$(.venv/bin/knm dev services up)"
    .venv/bin/python bench/audit_api.py            # --rows 1000000 --clients 32 --seconds 20

The history is what a busy cluster leaves after a month: 60,000 pod addresses each held
in turn by several pods (released, quarantined, handed out again), and 1,000 services
whose VIPs their backends carried as floating IPs, written in time order with COPY. The
clients alternate the two questions the API exists for: who held address X at T
(`/v1/ips/{ip}/holder`, a random used address at a random instant of the month) and a
history (`/v1/ips/{ip}/history` and `/v1/pods/{ns}/{name}/history`, in turn). Each
client sends its next request when the last is answered (closed loop), or with `--rate`
on a fixed schedule (open loop); the first `--warmup` seconds are not counted. A
request's time ends when its response's last byte is parsed, before this process checks
the answer.

Prints one JSON line: `holder_p99_ms`, `history_p99_ms`, `rps`, and their context.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from urllib.parse import quote

import httptools
import uvloop
from pydantic_core import from_json
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.allocation_throughput import drop_database, fresh_database
from knm.core.store.database import create_engine, upgrade
from tests.runtime.fleet import free_port

TOKEN = "bench-audit-token"
START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH = timedelta(days=30)
POD_ADDRESSES = 60_000
SERVICES = 1_000
COLUMNS = "ip, action, kind, pool, namespace, name, uid, network, node, service, at, fact_id"


@dataclass
class History:
    lines: list[tuple[object, ...]] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    pods: list[tuple[str, str]] = field(default_factory=list)


def history(rows: int, rng: random.Random) -> History:
    """`rows` lines: VIPs and their backends first decided, then pod tenures until full."""
    found = History()
    vip_lines = SERVICES + SERVICES * 20 * 2
    per_address = (rows - vip_lines) // (2 * POD_ADDRESSES)
    extra = (rows - vip_lines) // 2 - per_address * POD_ADDRESSES
    serial = 0

    def add(
        ip: str,
        action: str,
        *,
        kind: str,
        holder: tuple[str, str, str],
        at: datetime,
        network: str | None = None,
        node: str | None = None,
        service: str | None = None,
    ) -> None:
        nonlocal serial
        serial += 1
        pool = "10.254.0.0/16" if kind != "pod" else "10.0.0.0/16"
        ns, name, uid = holder
        found.lines.append(
            (ip, action, kind, pool, ns, name, uid, network, node, service, at, f"{serial:032x}")
        )

    for s in range(SERVICES):
        vip = f"10.254.{s >> 8}.{s & 255 or 1}"
        ns, name = f"team-{s % 50}", f"svc-{s}"
        add(vip, "allocated", kind="service", holder=(ns, name, f"svc-{s}"), at=START)
        for b in range(20):
            began = START + MONTH * rng.random() * 0.9
            uid = f"backend-{s}-{b}"
            ended = began + timedelta(hours=rng.uniform(1, 48))
            for action, at in (("allocated", began), ("released", ended)):
                add(
                    vip,
                    action,
                    kind="floating",
                    holder=(ns, uid, uid),
                    at=at,
                    network=f"{ns}/tier-{s}",
                    node=f"node-{b % 50}",
                    service=f"{ns}/{name}",
                )
    for n in range(POD_ADDRESSES):
        ip = f"10.0.{n >> 8}.{n & 255}"
        found.addresses.append(ip)
        tenures = per_address + (1 if n < extra else 0)
        slot = MONTH / tenures
        for t in range(tenures):
            ns = f"team-{n % 50}"
            # Some names come back under new UIDs (StatefulSets); most are one-off.
            name = f"db-{n % 997}" if t % 4 == 0 else f"tier-{n % 300}-{n:05x}{t:02x}"
            uid = f"uid-{n}-{t}"
            began = START + slot * t + timedelta(seconds=rng.uniform(0, 60))
            ended = began + slot * rng.uniform(0.3, 0.9)
            for action, at in (("allocated", began), ("released", ended)):
                add(
                    ip,
                    action,
                    kind="pod",
                    holder=(ns, name, uid),
                    at=at,
                    network=f"{ns}/tier-{n % 300}",
                    node=f"node-{n % 50}",
                )
            if t < 2:
                found.pods.append((ns, name))
    # Written as the allocator writes: in the order things happened.
    found.lines.sort(key=lambda line: line[10])  # type: ignore[arg-type,return-value]
    return found


def fill(url: str, found: History) -> float:
    engine = create_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        for offset in range(0, len(found.lines), 100_000):
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for line in found.lines[offset : offset + 100_000]:
                writer.writerow(
                    [
                        "" if v is None else v.isoformat() if isinstance(v, datetime) else v
                        for v in line
                    ]
                )
            buffer.seek(0)
            cursor.copy_expert(
                f"COPY address_history ({COLUMNS}) FROM STDIN WITH (FORMAT csv)", buffer
            )
        cursor.close()
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text("VACUUM ANALYZE address_history"))
        count = connection.execute(text("SELECT count(*) FROM address_history")).scalar()
        # The fill's pages written out now: left to the checkpoint the fill's WAL set
        # off, they were written during the measurement (one spread its writes over
        # 226 s; the server's log says so with log_checkpoints).
        try:
            connection.execute(text("CHECKPOINT"))
        except ProgrammingError as error:
            raise SystemExit(
                f"CHECKPOINT refused ({error.orig}); the bench's user needs the role: "
                f"GRANT pg_checkpoint TO {engine.url.username}"
            ) from None
    engine.dispose()
    assert count == len(found.lines), count
    return time.perf_counter() - started


def serve(url: str, port: int, log: Path, *, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KNM_DATABASE_URL": url,
        "KNM_AUDIT_TOKEN_HASHES": hashlib.sha256(TOKEN.encode()).hexdigest(),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "knm", "audit-api", "--port", str(port), "--workers", str(workers)),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"knm audit-api did not become ready; see {log}")


@dataclass
class Timings:
    holder: list[float] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    errors: int = 0
    # Warm-up included: what the CPU figures are divided by.
    sent: int = 0


class BadAnswerError(Exception):
    """A response the API should not have given."""


class KeepAlive(asyncio.Protocol):
    """One client: one keep-alive HTTP/1.1 connection, one request at a time.

    Lean on purpose: the load generator shares the machine's two cores with the API and
    PostgreSQL, so every millisecond it spends is one the API does not get. Requests are
    written as bytes; responses are parsed by httptools (the C parser uvicorn serves
    with), every status is checked and every body is parsed as JSON.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes, float]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods, not its class.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(BadAnswerError(f"unparsable response: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"the API closed the connection ({exc})"))

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # The response's time ends here, at its last byte: not after this process's own
        # checks of it, nor after its turn to resume (the other responses that arrived
        # with it are handled first).
        answered = time.monotonic()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(
                (self._parser.get_status_code(), b"".join(self._body), answered)
            )
        self._body = []

    async def get(self, request: bytes) -> tuple[int, bytes, float]:
        """(status, body, when its last byte was parsed)."""
        assert self._transport is not None
        self._answer = self._loop.create_future()
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def request(target: str, port: int) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()


def check(kind: str, ip: str, status: int, body: bytes) -> None:
    """The status is one the question allows, and the body is the JSON it should be."""
    answer = from_json(body)
    if kind == "holder" and status == 200 and answer.get("ip") == ip and "uid" in answer:
        return
    if kind == "holder" and status == 404 and "detail" in answer:
        return
    if kind == "history" and status == 200 and isinstance(answer.get("holdings"), list):
        return
    raise BadAnswerError(f"{kind}: {status} {body[:200]!r}")


async def load(
    port: int,
    found: History,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    seed: int,
    rate: float | None,
) -> Timings:
    """Closed loop (each client asks again once answered), or with `rate` open loop: each
    client asks on a fixed schedule, and a request's time counts from when it was due,
    so a server that falls behind is not excused by clients that wait for it."""
    timings = Timings()
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(lambda: KeepAlive(loop), "127.0.0.1", port))[1]
        for _ in range(clients)
    ]
    started = time.monotonic()
    counting_from = started + warmup
    stop = counting_from + seconds
    interval = clients / rate if rate else 0.0

    async def one(number: int, connection: KeepAlive) -> None:
        rng = random.Random(seed + number)
        turn = number
        due = started + interval * number / clients
        while (now := time.monotonic()) < stop:
            if interval:
                if due > now:
                    await asyncio.sleep(due - now)
                begun, due = due, due + interval
            turn += 1
            ip = rng.choice(found.addresses)
            if turn % 2:
                kind = "holder"
                at = quote((START + MONTH * rng.random()).isoformat(), safe="")
                target = f"/v1/ips/{ip}/holder?at={at}"
            else:
                kind = "history"
                if turn % 4:
                    target = f"/v1/ips/{ip}/history"
                else:
                    ns, name = rng.choice(found.pods)
                    target = f"/v1/pods/{ns}/{name}/history"
            asked = request(target, port)
            if not interval:
                begun = time.monotonic()
            timings.sent += 1
            status, body, answered = await connection.get(asked)
            try:
                check(kind, ip, status, body)
            except BadAnswerError:
                timings.errors += 1
            if begun >= counting_from:
                (timings.holder if kind == "holder" else timings.history).append(answered - begun)

    try:
        await asyncio.gather(*(one(n, c) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            connection.close()
    return timings


def cpu_seconds(pid: int) -> float:
    """User and system time of a process and its threads so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """The process and its children (the API's workers)."""
    found = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def backends(server_url: str, url: str) -> list[int]:
    """The PostgreSQL server processes serving the API's connections (same machine)."""
    engine = create_engine(server_url)
    with engine.connect() as connection:
        pids = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name = 'knm-audit' AND datname = :name"
            ),
            {"name": make_url(url).database},
        ).scalars()
        found = [int(pid) for pid in pids]
    engine.dispose()
    return found


def total_cpu(pids: list[int]) -> float:
    found = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            found += cpu_seconds(pid)
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, all cores (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    idle = fields[3] + fields[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="`knm audit-api --workers`; default: one per core.",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Requests per second offered in all (open loop); default: closed loop.",
    )
    args = parser.parse_args()
    server_url = os.environ.get("KNM_DATABASE_URL", "")
    if not server_url.startswith("postgresql"):
        raise SystemExit(
            'KNM_DATABASE_URL must name a PostgreSQL server: eval "$(knm dev services up)"'
        )
    found = history(args.rows, random.Random(args.seed))
    url = fresh_database(server_url)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"knm-audit-bench-{os.getpid()}.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        fill_s = fill(url, found)
        port = free_port()
        server = serve(url, port, log, workers=args.workers)
        # The API's connections open as they are first needed: their backends' CPU is
        # read at the end, all of it (they did nothing else).
        workers = family(server.pid)
        server_cpu, own_cpu = total_cpu(workers), time.process_time()
        busy, capacity = machine_busy()
        timings = uvloop.run(
            load(
                port,
                found,
                clients=args.clients,
                seconds=args.seconds,
                warmup=args.warmup,
                seed=args.seed,
                rate=args.rate,
            )
        )
        server_cpu = total_cpu(workers) - server_cpu
        own_cpu = time.process_time() - own_cpu
        busy_now, capacity_now = machine_busy()
        busy, capacity = busy_now - busy, capacity_now - capacity
        database_cpu = total_cpu(backends(server_url, url))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(server_url, url)
    requests = len(timings.holder) + len(timings.history)
    ours = server_cpu + own_cpu + database_cpu
    print(
        json.dumps(
            {
                "holder_p99_ms": p(timings.holder, 0.99),
                "history_p99_ms": p(timings.history, 0.99),
                "rps": round(requests / args.seconds, 1),
                "mode": f"open loop, {args.rate:g} rps offered" if args.rate else "closed loop",
                "holder_p50_ms": p(timings.holder, 0.5),
                "history_p50_ms": p(timings.history, 0.5),
                "requests": requests,
                "errors": timings.errors,
                "rows": len(found.lines),
                "clients": args.clients,
                "seconds": args.seconds,
                "workers": args.workers,
                "fill_s": round(fill_s, 1),
                # CPU per request (warm-up included): what the API, the load generator
                # and PostgreSQL's backends for the API cost, whatever else the machine
                # is doing.
                "server_cpu_ms_per_request": round(server_cpu * 1000 / timings.sent, 3),
                "client_cpu_ms_per_request": round(own_cpu * 1000 / timings.sent, 3),
                "database_cpu_ms_per_request": round(database_cpu * 1000 / timings.sent, 3),
                # The machine during the run: how busy its cores were, and how much of
                # that was this bench (the rest: other work sharing the machine).
                "machine_busy_fraction": round(busy / capacity, 2),
                "bench_share_of_busy": round(ours / busy, 2) if busy else None,
                # What the cores would give with nothing else running: all of them over
                # the CPU a request costs on all three sides (an estimate, not measured).
                "estimated_rps_alone": round(
                    (os.cpu_count() or 1) * timings.sent / ours if ours else 0.0, 0
                ),
                "load_average": round(os.getloadavg()[0], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
