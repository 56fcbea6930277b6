"""Small helpers over the `websockets` asyncio client: every wait has a deadline."""
import asyncio
import json
import socket
import urllib.request
import uuid

from websockets.asyncio.client import connect as ws_connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: F401 (re-exported)
from websockets.protocol import State
from websockets.uri import parse_uri

STEP_S = 10.0  # deadline for any single step (connect, one message, close)
TEST_S = 60.0  # deadline for a whole test


def run(coro, timeout=TEST_S):
    """Run one test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def stream_name(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


async def connect(url, **kw):
    kw.setdefault("max_size", None)       # our messages go up to a few MiB
    kw.setdefault("ping_interval", None)  # no client keepalive pings interleaving with the checks
    kw.setdefault("open_timeout", STEP_S)
    kw.setdefault("close_timeout", STEP_S)
    kw.setdefault("proxy", None)          # never route 127.0.0.1 through a proxy from the environment
    return await asyncio.wait_for(ws_connect(url, **kw), STEP_S)


def raw_handshake(url, edit_headers):
    """Send the handshake `websockets` would send, after edit_headers(headers) changed it, and
    return websockets' parsed Response. For requests its high-level client will not make
    (e.g. another Sec-WebSocket-Version)."""
    proto = ClientProtocol(parse_uri(url))
    request = proto.connect()
    edit_headers(request.headers)
    proto.send_request(request)
    with socket.create_connection((proto.uri.host, proto.uri.port), timeout=STEP_S) as sock:
        for data in proto.data_to_send():
            sock.sendall(data)
        while proto.state is State.CONNECTING:
            data = sock.recv(65536)
            if not data:
                proto.receive_eof()
                break
            proto.receive_data(data)
    events = proto.events_received()
    assert events, "no HTTP response to the handshake (handshake_exc %r)" % proto.handshake_exc
    return events[0]


def http_get(url, timeout=STEP_S):
    """GET without any proxy from the environment; returns (status, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return r.status, r.read()


async def recv(ws, timeout=STEP_S):
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_event(ws, timeout=STEP_S):
    msg = await recv(ws, timeout)
    assert isinstance(msg, str), "expected a text event, got %d binary bytes: %r" % (len(msg), msg[:16])
    return json.loads(msg)


async def expect_publisher_event(ws, live, timeout=STEP_S):
    ev = await recv_event(ws, timeout)
    assert ev.get("event") == "publisher" and ev.get("live") is live, \
        "expected {event: publisher, live: %s}, got %r" % (live, ev)
    return ev


async def recv_binaries(ws, n, timeout=STEP_S):
    """Receive n binary messages (each within `timeout`); return (binaries, text messages seen in between)."""
    out, texts = [], []
    while len(out) < n:
        msg = await recv(ws, timeout)
        if isinstance(msg, str):
            texts.append(msg)
        else:
            out.append(msg)
    return out, texts


async def expect_closed(ws, timeout=STEP_S):
    """Read until the connection closes; return the close frame the server sent (or None)."""
    async def drain():
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            return e
    exc = await asyncio.wait_for(drain(), timeout)
    return exc.rcvd


class Publisher:
    """A publisher connection whose text events are collected by a background reader."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.events = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server, name, **kw):
        ws = await connect(server.ws("/ws/publish/" + name), **kw)
        first = await recv_event(ws)
        assert first == {"event": "stream", "name": name}, "publisher's first message: %r" % (first,)
        return cls(ws, name)

    async def _read(self):
        try:
            while True:
                msg = await self.ws.recv()
                if isinstance(msg, str):
                    self.events.append(json.loads(msg))
                else:
                    self.events.append({"unexpected_binary": len(msg)})
                self._changed.set()
        except ConnectionClosed:
            self._changed.set()

    async def wait_event(self, pred, timeout=STEP_S):
        """Wait until some collected event satisfies pred; return it."""
        async def loop():
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(loop(), timeout)

    async def send(self, msg):
        await asyncio.wait_for(self.ws.send(msg), STEP_S)

    async def close(self):
        await asyncio.wait_for(self.ws.close(), STEP_S)
        await asyncio.wait_for(self._task, STEP_S)


async def watcher(server, name, live, **kw):
    ws = await connect(server.ws("/ws/watch/" + name), **kw)
    await expect_publisher_event(ws, live)
    return ws
