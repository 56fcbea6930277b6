"""/ws/echo (echo_endpoint = true) driven by the `websockets` client."""
import asyncio
import os

from wsutil import STEP_S, connect, expect_closed, recv, run

MIB = 1 << 20


def test_no_extension_negotiated(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))  # websockets offers permessage-deflate by default
        assert ws.response.status_code == 101
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await ws.close()
    run(go())


def test_echo_text_and_binary(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        for msg in ["hello", "h\u00e9llo \u2713 \U0001F600", "", bytes(range(256)), b"\x00", b""]:
            await ws.send(msg)
            got = await recv(ws)
            assert type(got) is type(msg) and got == msg, "sent %r got %r" % (msg, got)
        await ws.close()
        assert ws.close_code == 1000
    run(go())


def test_echo_1mib_binary_and_text(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        blob = os.urandom(MIB)
        await ws.send(blob)
        got = await recv(ws)
        assert isinstance(got, bytes) and len(got) == MIB and got == blob
        text = ("0123456789abcdef\u00e9" * (MIB // 18 + 1))[:MIB]
        await ws.send(text)
        got = await recv(ws)
        assert got == text
        await ws.close()
    run(go())


def test_echo_fragmented_messages(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        # binary in 3 frames
        parts = [b"abc", os.urandom(70000), b"xyz"]
        await ws.send(parts)
        assert await recv(ws) == b"".join(parts)
        # text in frames that split a 3-byte UTF-8 character (U+2713) across frame boundaries
        raw = "check \u2713 done".encode()
        cut = raw.index("\u2713".encode()) + 1
        await ws.send([raw[:cut], raw[cut:cut + 1], raw[cut + 1:]], text=True)
        assert await recv(ws) == "check \u2713 done"
        await ws.close()
    run(go())


def test_echo_burst_in_order(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        msgs = [("m%d" % i) if i % 2 else os.urandom(i % 300) for i in range(1000)]
        for m in msgs:
            await ws.send(m)
        for i, m in enumerate(msgs):
            got = await recv(ws)
            assert got == m, "message %d differs" % i
        await ws.close()
    run(go())


def test_ping_pong_and_close_code(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, STEP_S)
        await ws.send("after ping")
        assert await recv(ws) == "after ping"
        await asyncio.wait_for(ws.close(code=1000, reason="bye"), STEP_S)
        rcvd = ws.protocol.close_rcvd
        assert rcvd is not None, "server did not send a close frame"
        assert rcvd.code == 1000 and ws.close_code == 1000
    run(go())


def test_invalid_utf8_text_closes_1007(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        await ws.send(b"valid \xce\xba then bad \xff", text=True)  # websockets sends these bytes as a text frame
        rcvd = await expect_closed(ws)
        assert rcvd is not None and rcvd.code == 1007, "server close frame %r, expected 1007" % (rcvd,)
    run(go())


def test_invalid_utf8_across_fragments_closes_1007(server):
    async def go():
        ws = await connect(server.ws("/ws/echo"))
        # U+2713 is e2 9c 93: a truncated sequence at the end of the message is invalid.
        await ws.send([b"ok \xe2", b"\x9c"], text=True)
        rcvd = await expect_closed(ws)
        assert rcvd is not None and rcvd.code == 1007, "server close frame %r, expected 1007" % (rcvd,)
    run(go())


def test_message_at_limit_echoed_and_over_limit_closes_1009(server_small):
    async def go():
        ws = await connect(server_small.ws("/ws/echo"))
        blob = os.urandom(65536)
        await ws.send(blob)
        assert await recv(ws) == blob
        # Over the limit in fragments: the limit is on the reassembled message.
        await ws.send([os.urandom(40000), os.urandom(40000)])
        rcvd = await expect_closed(ws)
        assert rcvd is not None and rcvd.code == 1009, "server close frame %r, expected 1009" % (rcvd,)
    run(go())
