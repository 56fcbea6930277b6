"""Handshake rejections as the `websockets` client sees them (InvalidStatus, or its parsed Response)."""
import re

import pytest

from wsutil import InvalidStatus, Publisher, connect, raw_handshake, recv_event, run, stream_name


async def rejected_status(url, **kw):
    """The HTTP status of the handshake answer: 101 when the connection opened."""
    try:
        ws = await connect(url, **kw)
    except InvalidStatus as e:
        return e.response.status_code
    await ws.close()
    return 101


@pytest.mark.parametrize("path,status", [
    ("/ws/nope", 404),
    ("/ws/watch/", 400),
    ("/ws/watch/bad.name", 400),
    ("/ws/watch/bad%20name", 400),
    ("/ws/publish/" + "a" * 65, 400),
    ("/ws/watch/" + "a" * 65, 400),
])
def test_rejected_paths(server, path, status):
    assert run(rejected_status(server.ws(path))) == status


def test_name_of_64_chars_is_accepted(server):
    assert run(rejected_status(server.ws("/ws/watch/" + "A-z_9" * 12 + "abcd"))) == 101


def test_second_publisher_409(server):
    async def go():
        name = stream_name("busy")
        pub = await Publisher.open(server, name)
        assert await rejected_status(server.ws("/ws/publish/" + name)) == 409
        await pub.close()
        # The name is free again once the first publisher has gone.
        pub2 = await Publisher.open(server, name)
        await pub2.close()
    run(go())


def test_echo_disabled_is_404(server_no_echo):
    assert run(rejected_status(server_no_echo.ws("/ws/echo"))) == 404


def test_publish_without_name_gets_random_name(server):
    async def go():
        ws = await connect(server.ws("/ws/publish"))
        ev = await recv_event(ws)
        assert ev.get("event") == "stream" and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", ev.get("name", "")), ev
        await ws.close()
    run(go())


@pytest.mark.parametrize("version", ["8", "12", "14", "abc"])
def test_wrong_version_426_names_13(server, version):
    def edit(headers):
        del headers["Sec-WebSocket-Version"]
        headers["Sec-WebSocket-Version"] = version
    response = raw_handshake(server.ws("/ws/echo"), edit)
    assert response.status_code == 426
    assert response.headers.get_all("Sec-WebSocket-Version") == ["13"]


def test_bad_handshake_400(server):
    def edit(headers):
        del headers["Sec-WebSocket-Key"]
        headers["Sec-WebSocket-Key"] = "too-short"  # must be 16 bytes, base64
    assert raw_handshake(server.ws("/ws/echo"), edit).status_code == 400


@pytest.mark.parametrize("query,status", [
    ("", 403),
    ("?key=wrong", 403),
    ("?key=s3cre", 403),
    ("?key=s3cret1", 403),
    ("?key=s3cret", 101),
    ("?other=1&key=s3cret", 101),
])
def test_publish_key(server_locked, query, status):
    url = server_locked.ws("/ws/publish/" + stream_name("key") + query)
    assert run(rejected_status(url)) == status


@pytest.mark.parametrize("origin,status", [
    (None, 101),  # not a browser: origin rules do not apply
    ("http://good.example", 101),
    ("https://cam.example:8443", 101),
    ("http://evil.example", 403),
    ("https://cam.example", 403),
    ("http://good.example.evil", 403),
])
def test_origin_for_watch_and_publish(server_locked, origin, status):
    name = stream_name("origin")
    kw = {"origin": origin} if origin else {}
    assert run(rejected_status(server_locked.ws("/ws/watch/" + name), **kw)) == status
    assert run(rejected_status(server_locked.ws("/ws/publish/%s?key=s3cret" % name), **kw)) == status
