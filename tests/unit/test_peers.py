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
from tainted_proxy.pool.shared import create_file, remove_file


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


def test_the_sockets_sit_beside_the_shared_file_in_a_directory_only_its_user_may_enter():
    path = create_file(2)
    try:
        directory = os.path.dirname(path)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert socket_path(path, 3) == os.path.join(directory, "worker-3.sock")
    finally:
        remove_file(path)
    assert not os.path.exists(directory)


async def test_a_worker_answers_a_request_on_a_socket_only_its_user_may_open(tmp_path: Path):
    path = str(tmp_path / "w.0.sock")

    async def echo(request):
        return {"got": request["x"]}

    async def boom(request):
        raise RuntimeError("handler broke")

    async def unsendable(request):
        return {"x": object()}

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, path, {"echo": echo, "boom": boom, "odd": unsendable})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert await ask(path, {"op": "echo", "x": 7}, 2) == {"got": 7}
        assert await ask(path, {"op": "nope"}, 2) == {"error": "unknown op 'nope'"}
        assert (await ask(path, {"op": "boom"}, 2))["error"] == "RuntimeError: handler broke"
        assert "not JSON serializable" in (await ask(path, {"op": "odd"}, 2))["error"]
        assert await ask(path, {"op": "echo", "x": 8}, 2) == {"got": 8}  # still serving
        nursery.cancel_scope.cancel()
    assert not os.path.exists(path)  # removed when the worker stops
    with pytest.raises(PeerUnavailable):
        await ask(path, {"op": "echo", "x": 1}, 2)
