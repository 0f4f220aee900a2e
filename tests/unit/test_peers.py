"""tainted_proxy.peers: the framing between workers (sans-IO), and one request answered
over a real Unix socket in one Trio run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from tainted_proxy.peers import socket_path
from tainted_proxy.peers.client import PeerUnavailable, ask
from tainted_proxy.peers.codec import MAX_FRAME, PeerProtocolError, Reader, encode
from tainted_proxy.peers.server import serve


def test_a_message_comes_out_whole_however_the_bytes_arrive():
    frame = encode({"op": "parts", "names": ["sessions"], "users": {"b", "a"}})
    r = Reader()
    for i in range(len(frame)):
        assert r.message() is None
        r.feed(frame[i : i + 1])
    assert r.message() == {"op": "parts", "names": ["sessions"], "users": ["a", "b"]}
    assert r.message() is None


@pytest.mark.parametrize(
    "frame",
    [
        (MAX_FRAME + 1).to_bytes(4, "big"),
        (5).to_bytes(4, "big") + b"nope!",
        (2).to_bytes(4, "big") + b"[]",
    ],
    ids=["too-large", "not-json", "not-an-object"],
)
def test_a_frame_that_is_not_a_message_is_refused(frame):
    r = Reader()
    with pytest.raises(PeerProtocolError):
        r.feed(frame)
        r.message()


def test_the_socket_path_sits_beside_the_shared_file():
    assert socket_path("/dev/shm/tainted-proxy-workers-x", 3) == (
        "/dev/shm/tainted-proxy-workers-x.3.sock"
    )


async def test_a_worker_answers_a_request_on_a_socket_only_its_user_may_open(tmp_path: Path):
    path = str(tmp_path / "w.0.sock")

    async def echo(request):
        return {"got": request["x"]}

    async def boom(request):
        raise RuntimeError("handler broke")

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, path, {"echo": echo, "boom": boom})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert await ask(path, {"op": "echo", "x": 7}, 2) == {"got": 7}
        assert await ask(path, {"op": "nope"}, 2) == {"error": "unknown op 'nope'"}
        assert (await ask(path, {"op": "boom"}, 2))["error"] == "RuntimeError: handler broke"
        nursery.cancel_scope.cancel()
    assert not os.path.exists(path)  # removed when the worker stops
    with pytest.raises(PeerUnavailable):
        await ask(path, {"op": "echo", "x": 1}, 2)
