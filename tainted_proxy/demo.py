"""``tainted-proxy demo``: a throwaway MariaDB, the proxy in front of it, an ORM-style
workload through it, and a summary of what happened. Cleans up after itself."""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field

import pymysql

from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread, config_for

UPSTREAM_CAP = 5
SESSIONS_PER_CLIENT = 5


@dataclass
class Tally:
    sessions: int = 0
    statements: int = 0
    leaks: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(port: int, n: int, tally: Tally) -> None:
    rnd = random.Random(n)
    for s in range(SESSIONS_PER_CLIENT):
        try:
            conn = pymysql.connect(
                host="127.0.0.1",
                port=port,
                user="app",
                password="app-secret",
                database="shop",
                connect_timeout=30,
            )
        except pymysql.err.OperationalError as exc:
            with tally.lock:
                tally.errors.append(f"client {n}: {exc}")
            continue
        stmts = 0
        with conn, conn.cursor() as cur:
            # A fresh session must look fresh, whoever used the connection before.
            cur.execute("SELECT @@time_zone, @tag")
            tz, tag = cur.fetchone()
            stmts += 1
            leaked = tz != "SYSTEM" or tag is not None
            # ... then this client taints it, as apps do.
            cur.execute("SET time_zone = '+05:30'")
            cur.execute("SET @tag = %s", (f"client-{n}-{s}",))
            stmts += 2
            for _ in range(3):
                cur.execute(
                    "INSERT INTO orders (customer, amount) VALUES (%s, %s)",
                    (f"c{n}", rnd.randint(1, 500)),
                )
                cur.execute(
                    "SELECT COUNT(*), SUM(amount) FROM orders WHERE customer = %s", (f"c{n}",)
                )
                cur.fetchall()
                conn.commit()
                stmts += 3
        with tally.lock:
            tally.sessions += 1
            tally.statements += stmts
            tally.leaks += int(leaked)


def run_demo(args: argparse.Namespace) -> int:
    clients = max(1, int(getattr(args, "clients", 20)))
    print("tainted-proxy demo")
    print("==================")
    try:
        srv = MariaDBServer(max_connections=50)
        t0 = time.monotonic()
        srv.start()
    except MariaDBNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"1. throwaway MariaDB {srv.version} on 127.0.0.1:{srv.port} "
            f"(datadir {srv.datadir}, started in {time.monotonic() - t0:.1f}s)"
        )
        srv.execute("CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app-secret'")
        srv.execute("GRANT ALL PRIVILEGES ON *.* TO 'app'@'%'")
        srv.execute("CREATE DATABASE shop")
        srv.execute(
            "CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(20), "
            "amount INT, KEY (customer))"
        )
        cfg = config_for(
            srv.host,
            srv.port,
            users={"app": {"password": "app-secret", "pool_mode": "session"}},
            upstream={"max_connections": UPSTREAM_CAP},
            pool={"checkout_timeout": 30.0},
        )
        with ProxyThread(cfg) as proxy:
            print(
                f"2. tainted-proxy on 127.0.0.1:{proxy.port}, session pooling, "
                f"at most {UPSTREAM_CAP} upstream connections"
            )
            print(
                f"3. {clients} clients x {SESSIONS_PER_CLIENT} sessions each: every session "
                "checks it starts clean, then sets time_zone and @tag, and runs 3 transactions"
            )
            tally = Tally()
            started = time.monotonic()
            threads = [
                threading.Thread(target=_client, args=(proxy.port, i, tally))
                for i in range(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            stats = proxy.call(lambda: proxy.proxy.pool.stats)
            rows = srv.execute("SELECT COUNT(*) FROM shop.orders")
            print()
            print("what happened")
            print("-------------")
            print(
                f"client sessions served     {tally.sessions} in {elapsed:.2f}s "
                f"({tally.statements} statements)"
            )
            print(
                f"upstream connections       opened {stats.opened}, peak open {stats.peak_open} "
                f"(cap {UPSTREAM_CAP}), resets {stats.reset}, failed resets {stats.reset_failed}"
            )
            print(
                f"clients that had to wait   {stats.waited} (longest {stats.max_wait_seconds * 1000:.0f} ms, "
                f"timeouts {stats.wait_timeouts})"
            )
            print(f"rows written               {rows[0][0]}")
            print(
                f"sessions that saw another  {tally.leaks}  (must be 0: each connection is reset "
                "before the next client gets it)"
            )
            for e in tally.errors[:5]:
                print(f"error: {e}")
            ok = tally.leaks == 0 and not tally.errors and stats.peak_open <= UPSTREAM_CAP
            print()
            print("result: OK" if ok else "result: FAILED")
            return 0 if ok else 1
    finally:
        srv.close()
        print("cleaned up the throwaway MariaDB")
