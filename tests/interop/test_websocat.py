"""websocat (a client nobody here wrote) against the real server: echo, handshake rejections, and
the relay through scripts/ws-publish.sh, ws-watch.sh and ws-watchers.sh, which wrap websocat."""
import asyncio
import base64
import os
import random
import re
import signal
import subprocess
import time

import pytest

from wsutil import STEP_S, Publisher, http_get, run, stream_name

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPTS = os.path.join(ROOT, "scripts")
INIT, KEY, DELTA, AUDIO = 1, 2, 3, 4
BUF = ["-B", "1000000"]  # websocat splits messages larger than its buffer (64 KiB by default)


def script_env(websocat, **extra):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(websocat) + os.pathsep + env.get("PATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def websocat_run(websocat, args, stdin=b"", timeout=STEP_S):
    return subprocess.run([websocat, *args], input=stdin, capture_output=True, timeout=timeout)


def b64(msg):
    return base64.b64encode(msg).decode()


def messages(n, seed):
    """An init, a key frame, then deltas, audio and other kinds, 1 B to 200 KB (across 64 KiB)."""
    rng = random.Random(seed)
    sizes = [1, 2, 100, 125, 126, 5000, 65535, 65536, 65537, 70000, 200000]
    out = []
    for i in range(n):
        kind = INIT if i == 0 else KEY if i in (1, n // 2) else [DELTA, DELTA, DELTA, AUDIO, 9][i % 5]
        out.append(bytes([kind]) + rng.randbytes(sizes[i % len(sizes)] - 1))
    return out


def wait_until(pred, what, timeout=STEP_S, procs=(), details=lambda: ""):
    """Poll pred() until true or the deadline; fail early if a process we wait on died."""
    deadline = time.monotonic() + timeout
    while not pred():
        for p in procs:
            if p.poll() is not None:
                pytest.fail("waiting for %s: process %s exited with %s %s" % (what, p.args, p.returncode, details()))
        if time.monotonic() > deadline:
            pytest.fail("timed out after %ss waiting for %s %s" % (timeout, what, details()))
        time.sleep(0.02)


def kill_tree(proc):
    """Kill a script started with start_new_session=True together with its websocat children."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def file_has(path, text):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return text in f.read()
    except FileNotFoundError:
        return False


def read_b64_lines(path):
    with open(path) as f:
        return [base64.b64decode(line.strip()) for line in f if line.strip()]


def close_count(server, code):
    _, body = http_get(server.http("/metrics"))
    m = re.search(r'^relay_websocket_closes_total\{code="%d"\} (\d+)' % code, body.decode(), re.M)
    return int(m.group(1)) if m else 0


class Watch:
    """scripts/ws-watch.sh in the background, its binary messages saved as base64 lines."""

    def __init__(self, websocat, server, name, tmp, tag, count):
        self.out = os.path.join(tmp, tag + ".b64")
        self.err = os.path.join(tmp, tag + ".err")
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [os.path.join(SCRIPTS, "ws-watch.sh"), server.ws("/ws/watch/" + name), "60"],
                env=script_env(websocat, COUNT=count, OUT=self.out, EVENTS=1),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True)

    def received(self):
        try:
            with open(self.out, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_joined(self, live):
        # ws-watch.sh prints each text event; the first one says the server registered us.
        ev = 'event {"event":"publisher","live":%s}' % ("true" if live else "false")
        wait_until(lambda: file_has(self.err, ev), "a websocat watcher's first event", procs=[self.proc],
                   details=lambda: "(ws-watch.sh stderr: %r)" % open(self.err).read())

    def finish(self):
        try:
            stdout, _ = self.proc.communicate(timeout=STEP_S * 2)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc)
            pytest.fail("ws-watch.sh did not finish; stderr: %s" % open(self.err).read())
        assert self.proc.returncode == 0, "ws-watch.sh exit %s: %s" % (self.proc.returncode, open(self.err).read())
        return stdout.decode(), read_b64_lines(self.out)


def test_echo_text_lines(server, websocat):
    lines = ["hello", "h\u00e9llo \u2713 \U0001F600", "x" * 70000]
    r = websocat_run(websocat, ["-t", *BUF, "--close-status-code", "1000", server.ws("/ws/echo")],
                     stdin="".join(line + "\n" for line in lines).encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split("\n")[:-1] == lines


def test_echo_binary_and_text_messages(server, websocat):
    rng = random.Random(5)
    msgs = [rng.randbytes(n) for n in (1, 125, 126, 65535, 65536, 70000, 300000)]
    stdin = "".join("B%s\n" % b64(m) for m in msgs) + "Tsome text\n"
    r = websocat_run(websocat, ["-t", *BUF, "--binary-prefix=B", "--text-prefix=T", "--base64",
                                "--close-status-code", "1000", server.ws("/ws/echo")], stdin=stdin.encode())
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().split("\n")[:-1]
    assert len(out) == len(msgs) + 1
    assert [base64.b64decode(line[1:]) for line in out[:-1]] == msgs
    assert all(line.startswith("B") for line in out[:-1]) and out[-1] == "Tsome text"


@pytest.mark.parametrize("which,path,extra,status", [
    ("server", "/ws/nope", [], "404 Not Found"),
    ("server", "/ws/watch/bad.name", [], "400 Bad Request"),
    ("server", "/ws/publish/" + "a" * 65, [], "400 Bad Request"),
    ("server_no_echo", "/ws/echo", [], "404 Not Found"),
    ("server_locked", "/ws/publish/k?key=nope", [], "403 Forbidden"),
    ("server_locked", "/ws/watch/o", ["--origin", "http://evil.example"], "403 Forbidden"),
])
def test_rejections_seen_by_websocat(request, websocat, which, path, extra, status):
    srv = request.getfixturevalue(which)
    r = websocat_run(websocat, ["-t", *extra, srv.ws(path)])
    assert r.returncode != 0
    assert "(%s)" % status in r.stderr.decode(), r.stderr


def test_origin_allowed_for_websocat(server_locked, websocat):
    r = websocat_run(websocat, ["-t", "--origin", "http://good.example", "--close-status-code", "1000",
                                server_locked.ws("/ws/watch/" + stream_name("o"))])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == '{"event":"publisher","live":false}\n'


def test_second_publisher_409_seen_by_websocat(server_locked, websocat, tmp_path):
    name = stream_name("busy")
    url = server_locked.ws("/ws/publish/%s?key=s3cret" % name)
    out = tmp_path / "first.out"
    with open(out, "wb") as f:
        first = subprocess.Popen([websocat, "-t", "-n", "-U", url], stdin=subprocess.DEVNULL,
                                 stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: file_has(out, '{"event":"stream","name":"%s"}' % name),
                   "the first publisher's stream event", procs=[first])
        r = websocat_run(websocat, ["-t", url])
        assert r.returncode != 0 and "(409 Conflict)" in r.stderr.decode(), r.stderr
    finally:
        first.kill()
        first.wait()


def test_publish_script_to_three_watch_scripts_byte_identical(server, websocat, tmp_path):
    name = stream_name("scripts")
    msgs = messages(60, seed=11)
    frames = tmp_path / "frames.b64"
    frames.write_text("".join(b64(m) + "\n" for m in msgs))
    watches = [Watch(websocat, server, name, str(tmp_path), "w%d" % i, len(msgs)) for i in range(3)]
    try:
        for w in watches:
            w.wait_joined(live=False)
        closes_before = close_count(server, 1000)

        pub = subprocess.run([os.path.join(SCRIPTS, "ws-publish.sh"), server.ws("/ws/publish/" + name),
                              str(frames), "300"], env=script_env(websocat), capture_output=True, timeout=30)
        assert pub.returncode == 0, pub.stderr
        total = sum(len(m) for m in msgs)
        assert ("ws-publish: %d messages, %d bytes in" % (len(msgs), total)) in pub.stderr.decode(), pub.stderr

        for i, w in enumerate(watches):
            summary, got = w.finish()
            assert len(got) == len(msgs), "watcher %d got %d of %d messages" % (i, len(got), len(msgs))
            for j, (g, m) in enumerate(zip(got, msgs)):
                assert g == m, "watcher %d message %d differs (len %d vs %d)" % (i, j, len(g), len(m))
            assert summary.startswith("ws-watch: %d messages, %d bytes (binary)" % (len(msgs), total)), summary
    finally:
        for w in watches:
            kill_tree(w.proc)
    # websocat closed the publisher with --close-status-code 1000 (without it the server sees 1005).
    wait_until(lambda: close_count(server, 1000) > closes_before, "the publisher's close 1000 in /metrics")


def test_late_websocat_watcher_gets_init_and_key_group_first(server, websocat, tmp_path):
    name = stream_name("late")
    rng = random.Random(12)
    init, key1, d1 = bytes([INIT]) + b'{"v":1}', bytes([KEY]) + rng.randbytes(20000), bytes([DELTA]) + b"d1"
    audio, other = bytes([AUDIO]) + rng.randbytes(300), bytes([9]) + b"other"
    key2, d2, d3 = bytes([KEY]) + rng.randbytes(100000), bytes([DELTA]) + b"d2", bytes([DELTA]) + rng.randbytes(70000)
    before = [init, key1, d1, audio, other, key2, d2, d3]
    live = [bytes([DELTA]) + b"d4", bytes([AUDIO]) + b"a2"]

    early = Watch(websocat, server, name, str(tmp_path), "early", len(before) + len(live))
    late = pub = None
    try:
        early.wait_joined(live=False)
        # A websocat publisher fed line by line, so it stays live while the late watcher joins.
        pub = subprocess.Popen([websocat, "-u", "-t", *BUF, "--binary-prefix=B", "--base64", "--close-status-code",
                                "1000", server.ws("/ws/publish/" + name)],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        early.wait_joined(live=True)

        def send(msgs):
            pub.stdin.write("".join("B%s\n" % b64(m) for m in msgs).encode())
            pub.stdin.flush()
        send(before)
        # Sync point: the early watcher got everything, so the server has seen (and cached) it all.
        wait_until(lambda: early.received() == len(before), "the early watcher to get %d messages" % len(before),
                   procs=[early.proc, pub])
        late = Watch(websocat, server, name, str(tmp_path), "late", 4 + len(live))
        late.wait_joined(live=True)
        send(live)
        _, got_early = early.finish()
        _, got_late = late.finish()
        assert got_early == before + live
        assert [m[:1] for m in got_late] == [m[:1] for m in [init, key2, d2, d3] + live], \
            "late watcher got kinds %r" % [m[0] for m in got_late]
        assert got_late == [init, key2, d2, d3] + live
        pub.stdin.close()
        assert pub.wait(timeout=STEP_S) == 0, pub.stderr.read()
    finally:
        for w in (early, late):
            if w:
                kill_tree(w.proc)
        if pub and pub.poll() is None:
            pub.kill()
            pub.wait()


def test_watchers_script_counts_every_message(server, websocat):
    name = stream_name("many")
    n_watchers, msgs = 5, messages(20, seed=13)

    async def go():
        pub = await Publisher.open(server, name)
        proc = await asyncio.create_subprocess_exec(
            os.path.join(SCRIPTS, "ws-watchers.sh"), server.ws("/ws/watch/" + name), str(n_watchers), "30",
            env=script_env(websocat, COUNT=len(msgs)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        try:
            # The publisher is told the watcher count: all of them are registered.
            await pub.wait_event(lambda ev: ev == {"event": "watchers", "count": n_watchers}, timeout=STEP_S)
            for m in msgs:
                await pub.send(m)
            out, err = await asyncio.wait_for(proc.communicate(), STEP_S * 2)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await pub.close()
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = run(go())
    assert rc == 0, err
    total = sum(len(m) for m in msgs)
    expect = "ws-watchers: %d watchers (0 failed): %d messages, %d bytes in all" % (
        n_watchers, n_watchers * len(msgs), n_watchers * total)
    assert expect in out, out + err
    assert "per watcher min %d max %d messages" % (len(msgs), len(msgs)) in out, out


@pytest.mark.parametrize("script", ["ws-publish.sh", "ws-watch.sh", "ws-watchers.sh"])
def test_scripts_help(script):
    r = subprocess.run([os.path.join(SCRIPTS, script), "--help"], capture_output=True, timeout=STEP_S)
    assert r.returncode == 0, r
    assert ("scripts/%s URL" % script) in r.stdout.decode(), r.stdout
