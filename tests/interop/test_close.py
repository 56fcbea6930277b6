"""Close codes on server shutdown and idle handling, as the `websockets` client sees them."""
import asyncio
import logging
import signal
import subprocess

from wsutil import STEP_S, connect, expect_closed, recv, recv_event, run, stream_name, watcher


class FrameLog(logging.Handler):
    """Collects websockets' debug log, which has one "< FRAME" line per frame received."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []
        self.logger = logging.getLogger("interop.frames.%d" % id(self))
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_sigterm_closes_every_websocket_1001_and_exits_0(start_server):
    s = start_server("sigterm", echo_endpoint="true")

    async def go():
        name = stream_name("bye")
        pub = await connect(s.ws("/ws/publish/" + name))
        assert await recv_event(pub) == {"event": "stream", "name": name}
        w = await watcher(s, name, live=True)
        echo = await connect(s.ws("/ws/echo"))
        await echo.send("still here")
        assert await recv(echo) == "still here"
        s.proc.send_signal(signal.SIGTERM)
        for role, ws in (("publisher", pub), ("watcher", w), ("echo", echo)):
            rcvd = await expect_closed(ws)
            assert rcvd is not None, "%s: no close frame from the server" % role
            assert rcvd.code == 1001, "%s: close code %s, expected 1001" % (role, rcvd.code)
    run(go())
    try:
        code = s.proc.wait(timeout=STEP_S)
    except subprocess.TimeoutExpired:
        code = "still running %ss after SIGTERM" % STEP_S
    assert code == 0, "exit code %s after SIGTERM, expected 0" % code


def test_server_pings_are_answered_so_idle_client_stays_open(start_server):
    # idle_timeout_ms: the server pings a silent connection at half of it and closes it at it.
    # websockets answers pings with pongs on its own, so a client that sends nothing stays open.
    s = start_server("idle", echo_endpoint="true", idle_timeout_ms=600)
    frames = FrameLog()

    async def go():
        ws = await connect(s.ws("/ws/echo"), logger=frames.logger)
        closed = asyncio.ensure_future(ws.wait_closed())
        done, _ = await asyncio.wait([closed], timeout=2.0)  # more than 3 idle timeouts
        assert not done, "server closed a client that answered its pings (code %s)" % ws.close_code
        assert any(m.startswith("< PING") for m in frames.messages), \
            "the server sent no ping in 2 s (idle_timeout_ms = 600); frames seen: %r" % frames.messages
        await ws.send(b"alive")
        assert await recv(ws) == b"alive"
        await ws.close()
    run(go())
