"""A client that reads a large result slowly: the proxy forwards as the client reads
(backpressure through the sockets), so its memory does not grow with the result."""

from __future__ import annotations

import os
import socket
import time

import pymysql
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:  # the proxy runs in this process
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_slow_reader_of_a_big_result_does_not_grow_the_proxys_memory(pooling_proxy, mode):
    p = pooling_proxy(mode, max_connections=2)
    c = pymysql.connect(
        host="127.0.0.1",
        port=p.port,
        user="app",
        password="app-secret",
        database="test",
        read_timeout=120,
    )
    c._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    before = rss_kib()
    # ~200 MB of rows, read in small gulps with pauses (unbuffered cursor)
    cur = c.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT REPEAT('x', 10000) FROM seq_1_to_20000")
    peak = before
    rows = 0
    t0 = time.monotonic()
    for _row in cur:
        rows += 1
        if rows % 500 == 0:
            time.sleep(0.01)
            peak = max(peak, rss_kib())
    assert rows == 20000
    growth_mib = (peak - before) / 1024
    print(
        f"slow reader ({mode}): 20000 rows x 10 kB in {time.monotonic() - t0:.1f} s, "
        f"proxy process RSS growth {growth_mib:.1f} MiB"
    )
    assert growth_mib < 32, f"the proxy buffered the result: +{growth_mib:.1f} MiB"
    with c.cursor() as cur2:
        cur2.execute("SELECT 1")
        assert cur2.fetchone() == (1,)
    c.close()
