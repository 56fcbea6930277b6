"""Checks one relay against the benchmark contract before it is measured.

Three watchers on one stream and one on another; the publisher sends text (to be ignored) and
binary messages of every length form (7-bit, 16-bit, 64-bit); each watcher must receive exactly
the binary messages of its stream, byte-identical and in order, and nothing of the other stream.
Text the server sends to watchers (camrelay's JSON events) is skipped.

Usage: python check_relay.py ws://127.0.0.1:PORT   (needs tornado; exits 0 when the relay passes)
"""

import asyncio
import os
import sys

from tornado.websocket import websocket_connect

SIZES = [1, 17, 125, 126, 127, 1000, 65535, 65536, 70000, 300000]
DEADLINE_S = 10


async def collect(ws, count):
    got = []
    while len(got) < count:
        msg = await ws.read_message()
        if msg is None:
            raise AssertionError(f"watcher closed after {len(got)} of {count} messages")
        if isinstance(msg, bytes):
            got.append(msg)
    return got


async def check(base):
    watchers = [await websocket_connect(f"{base}/ws/watch/check", max_message_size=1 << 24) for _ in range(3)]
    other = await websocket_connect(f"{base}/ws/watch/other", max_message_size=1 << 24)
    publisher = await websocket_connect(f"{base}/ws/publish/check")
    # Byte 0 = 5: a kind camrelay forwards but never caches.
    sent = [bytes([5]) + os.urandom(n - 1) for n in SIZES]
    await publisher.write_message("text is ignored")
    for m in sent:
        await publisher.write_message(m, binary=True)
    results = await asyncio.wait_for(asyncio.gather(*(collect(w, len(sent)) for w in watchers)), DEADLINE_S)
    for i, got in enumerate(results):
        for j, (g, s) in enumerate(zip(got, sent)):
            assert g == s, f"watcher {i}, message {j}: {len(g)} bytes received, {len(s)} sent, or contents differ"
    # The other stream's watcher must get nothing: a marker published there arrives first.
    marker = bytes([5]) + b"other stream"
    other_pub = await websocket_connect(f"{base}/ws/publish/other")
    await other_pub.write_message(marker, binary=True)
    [first] = await asyncio.wait_for(collect(other, 1), DEADLINE_S)
    assert first == marker, "a watcher received another stream's message"
    for ws in [*watchers, other, publisher, other_pub]:
        ws.close()
    print(f"ok: {len(sent)} messages ({sum(SIZES)} bytes) relayed byte-identical to 3 watchers")


if __name__ == "__main__":
    asyncio.run(check(sys.argv[1]))
