"""Benchmark peer: the camrelay relay contract in Python Tornado, the old demo's stack.

/ws/publish/{name}: one publisher per stream; /ws/watch/{name}: any number of watchers. Every
binary message goes to each watcher with write_message(binary=True). Text is ignored.

Usage: python relay.py PORT   (0 picks a free port; the real one is printed on stdout)
"""

import asyncio
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

# Unsent bytes past which a watcher holds back the publisher.
HIGH_WATER = 4 * 1024 * 1024

# name -> set of watcher handlers
WATCHERS: dict[str, set["Watch"]] = {}


class Watch(tornado.websocket.WebSocketHandler):
    def open(self, name):
        self.name = name
        WATCHERS.setdefault(name, set()).add(self)

    def on_close(self):
        WATCHERS.get(self.name, set()).discard(self)

    def on_message(self, message):
        pass


class Publish(tornado.websocket.WebSocketHandler):
    def open(self, name):
        self.name = name

    def on_message(self, message):
        if isinstance(message, str):
            return None
        writes = []
        for w in list(WATCHERS.get(self.name, ())):
            try:
                writes.append((w, w.write_message(message, binary=True)))
            except tornado.websocket.WebSocketClosedError:
                pass
        # Tornado buffers every write without bound, so an as-fast-as-possible publisher could grow
        # memory forever. Wait for the watchers that are far behind (Tornado reads the publisher's
        # next message only once the future on_message returns resolves). Tornado has no public
        # accessor for the buffered amount; this attribute is the pinned version's.
        pending = [f for w, f in writes if w.ws_connection is not None and buffered(w) > HIGH_WATER]
        return asyncio.gather(*pending, return_exceptions=True) if pending else None


def buffered(handler):
    return len(handler.ws_connection.stream._write_buffer or ())


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = tornado.web.Application(
        [(r"/ws/publish/([^/]+)", Publish), (r"/ws/watch/([^/]+)", Watch)],
        websocket_max_message_size=64 * 1024 * 1024,
    )
    server = tornado.httpserver.HTTPServer(app)
    [sock] = tornado.netutil.bind_sockets(port, "127.0.0.1")
    server.add_sockets([sock])
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
