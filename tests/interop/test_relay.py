"""Publish/watch relay driven by the `websockets` client."""
import asyncio
import json
import random
import struct

from wsutil import (STEP_S, Publisher, connect, expect_closed, expect_publisher_event,
                    http_get, recv, recv_binaries, run, stream_name, watcher)

INIT, KEY, DELTA, AUDIO = 1, 2, 3, 4


def frame(kind, seq, size, rng):
    """kind byte + 4-byte sequence number + pseudo-random payload, `size` bytes in all (>= 5)."""
    body = rng.randbytes(max(0, size - 5))
    return bytes([kind]) + struct.pack(">I", seq) + body


def mixed_messages(n, seed):
    rng = random.Random(seed)
    out = [frame(INIT, 0, 40, rng)]
    seq = 1
    while len(out) < n:
        r = rng.random()
        if seq % 30 == 1:
            kind, size = KEY, rng.choice([5, 1000, 50_000, 300_000])
        elif r < 0.55:
            kind, size = DELTA, rng.choice([5, 6, 200, 3000, 20_000, 65_535, 65_536, 70_000])
        elif r < 0.9:
            kind, size = AUDIO, rng.choice([5, 120, 400])
        else:
            kind, size = rng.choice([0, 5, 9, 255]), rng.choice([5, 125, 126, 127, 1000])
        out.append(frame(kind, seq, size, rng))
        seq += 1
    out.append(frame(DELTA, seq, 1 << 20, rng))  # one 1 MiB message at the end
    return out


def test_publish_to_three_watchers_byte_identical_in_order(server):
    async def go():
        name = stream_name("relay")
        pub = await Publisher.open(server, name)
        watchers = [await watcher(server, name, live=True) for _ in range(3)]
        msgs = mixed_messages(200, seed=1)

        async def publish():
            for m in msgs:
                await pub.send(m)

        results = await asyncio.gather(publish(), *(recv_binaries(w, len(msgs)) for w in watchers))
        for i, (got, texts) in enumerate(results[1:]):
            assert texts == [], "watcher %d got unexpected text messages mid-stream: %r" % (i, texts)
            assert len(got) == len(msgs)
            for j, (g, m) in enumerate(zip(got, msgs)):
                assert g == m, "watcher %d message %d differs (len %d vs %d, head %r vs %r)" % (
                    i, j, len(g), len(m), g[:5], m[:5])
        for w in watchers:
            await w.close()
        await pub.close()
    run(go())


def test_publisher_gets_watcher_count_and_keyframe_request(server):
    async def go():
        name = stream_name("events")
        pub = await Publisher.open(server, name)
        watchers = [await watcher(server, name, live=True) for _ in range(3)]
        # Counts are rate-limited (at most one per 250 ms) but the final count must arrive.
        await pub.wait_event(lambda ev: ev == {"event": "watchers", "count": 3}, timeout=5)
        await pub.wait_event(lambda ev: ev == {"event": "keyframe"}, timeout=5)
        for w in watchers:
            await w.close()
        await pub.close()
    run(go())


def test_api_streams_lists_live_stream(server):
    async def go():
        name = stream_name("api")
        pub = await Publisher.open(server, name)
        w = await watcher(server, name, live=True)
        await pub.send(bytes([KEY]) + b"x" * 95)
        assert await recv(w) == bytes([KEY]) + b"x" * 95

        status, body = await asyncio.to_thread(http_get, server.http("/api/streams"))
        assert status == 200
        streams = json.loads(body)
        mine = [s for s in streams if s.get("name") == name]
        assert len(mine) == 1, streams
        assert mine[0]["watchers"] == 1 and mine[0]["messages_in"] >= 1 and mine[0]["bytes_in"] >= 96, mine[0]
        await w.close()
        await pub.close()
    run(go())


def test_late_join_gets_init_and_key_group_first(server):
    async def go():
        name = stream_name("late")
        rng = random.Random(2)
        pub = await Publisher.open(server, name)
        early = await watcher(server, name, live=True)
        init = frame(INIT, 0, 64, rng)
        key1, d1 = frame(KEY, 1, 20_000, rng), frame(DELTA, 2, 3000, rng)
        audio, other = frame(AUDIO, 3, 300, rng), frame(9, 4, 50, rng)
        key2, d2, d3 = frame(KEY, 5, 100_000, rng), frame(DELTA, 6, 4000, rng), frame(DELTA, 7, 70_000, rng)
        before = [init, key1, d1, audio, other, key2, d2, d3]
        for m in before:
            await pub.send(m)
        # Sync point: the early watcher got everything, so the server has seen (and cached) it all.
        got, _ = await recv_binaries(early, len(before))
        assert got == before

        late = await watcher(server, name, live=True)
        cached, texts = await recv_binaries(late, 4)
        assert texts == []
        assert [m[:5] for m in cached] == [m[:5] for m in (init, key2, d2, d3)], \
            "late joiner should get init, latest key frame, its deltas; got kinds/seqs %r" % [m[:5] for m in cached]
        assert cached == [init, key2, d2, d3]

        live = [frame(DELTA, 8, 500, rng), frame(AUDIO, 9, 100, rng), frame(KEY, 10, 9000, rng)]
        for m in live:
            await pub.send(m)
        got, texts = await recv_binaries(late, len(live))
        assert texts == [] and got == live
        got, _ = await recv_binaries(early, len(live))
        assert got == live
        for w in (early, late):
            await w.close()
        await pub.close()
    run(go())


def test_publisher_leaves_and_new_publisher_takes_over(server):
    async def go():
        name = stream_name("rejoin")
        rng = random.Random(3)
        pub = await Publisher.open(server, name)
        w = await watcher(server, name, live=True)
        old = [frame(INIT, 0, 30, rng), frame(KEY, 1, 5000, rng), frame(DELTA, 2, 700, rng)]
        for m in old:
            await pub.send(m)
        got, _ = await recv_binaries(w, len(old))
        assert got == old

        await pub.close()
        await expect_publisher_event(w, live=False)
        # The watcher stays open: it still answers a ping.
        await asyncio.wait_for(await w.ping(), STEP_S)

        # A watcher joining now sees live:false and no stale cache.
        w2 = await watcher(server, name, live=False)

        pub2 = await Publisher.open(server, name)
        await expect_publisher_event(w, live=True)
        await expect_publisher_event(w2, live=True)
        new = [frame(INIT, 100, 30, rng), frame(KEY, 101, 6000, rng), frame(AUDIO, 102, 80, rng)]
        for m in new:
            await pub2.send(m)
        for x in (w, w2):
            got, texts = await recv_binaries(x, len(new))
            assert texts == [] and got == new, "after the new publisher joined, got %r" % [m[:5] for m in got]
        for x in (w, w2):
            await x.close()
        await pub2.close()
    run(go())


def test_empty_binary_from_publisher_closes_1007(server):
    async def go():
        name = stream_name("empty")
        pub = await connect(server.ws("/ws/publish/" + name))
        w = await watcher(server, name, live=True)
        await pub.send(b"")
        rcvd = await expect_closed(pub)
        assert rcvd is not None, "server dropped the publisher without a close frame"
        assert rcvd.code == 1007, "close code %s, expected 1007" % rcvd.code
        await expect_publisher_event(w, live=False)
        await w.close()
    run(go())


def test_text_from_publisher_and_watcher_is_ignored(server):
    async def go():
        name = stream_name("text")
        pub = await Publisher.open(server, name)
        w = await watcher(server, name, live=True)
        await pub.send("hello from publisher")
        await w.send("hello from watcher")
        # A key frame: the server holds deltas back from a watcher that has not had a key frame yet.
        m = bytes([KEY]) + b"after text"
        await pub.send(m)
        got, texts = await recv_binaries(w, 1)
        assert texts == [] and got == [m]
        await w.close()
        await pub.close()
    run(go())
