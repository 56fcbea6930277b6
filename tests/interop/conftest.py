"""Fixtures: start the real camrelay binary on port 0 and tell the tests where it listens.

The binary is $CAMRELAY_BIN, or target/release/camrelay (run.sh builds it); websocat is
$WEBSOCAT, or the one on PATH or in ~/.cargo/bin (run.sh installs it).
Server output goes to target/interop/<name>.log.
"""
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("CAMRELAY_BIN") or os.path.join(ROOT, "target", "release", "camrelay")
LOG_DIR = os.path.join(ROOT, "target", "interop")
LISTEN_RE = re.compile(r"listening on http://(\S+):(\d+)")
START_DEADLINE_S = 30


class Server:
    def __init__(self, name, config):
        self.name = name
        os.makedirs(LOG_DIR, exist_ok=True)
        self.config_path = os.path.join(LOG_DIR, name + ".config")
        self.log_path = os.path.join(LOG_DIR, name + ".log")
        with open(self.config_path, "w") as f:
            f.write("# written by tests/interop/conftest.py\n")
            for k, v in config.items():
                f.write("%s = %s\n" % (k, v))
        if not os.access(BIN, os.X_OK):
            pytest.fail("server binary %s missing (cargo build --release, or set CAMRELAY_BIN)" % BIN)
        self.proc = subprocess.Popen(
            [BIN, "--config", self.config_path],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._lines = queue.Queue()
        self._log = open(self.log_path, "wb")
        threading.Thread(target=self._pump, daemon=True).start()
        self.host, self.port = self._wait_listening()

    def _pump(self):
        # Keep draining the server's output so it never blocks on a full pipe.
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self._lines.put(line.decode("utf-8", "replace"))
        self._lines.put(None)

    def _wait_listening(self):
        deadline = time.monotonic() + START_DEADLINE_S
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                pytest.fail("no 'listening on' line within %ss; output:\n%s" % (START_DEADLINE_S, "".join(seen)))
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                pytest.fail("server exited (code %s) before listening; output:\n%s"
                            % (self.proc.returncode, "".join(seen)))
            seen.append(line)
            m = LISTEN_RE.search(line)
            if m:
                return "127.0.0.1", int(m.group(2))

    def ws(self, path):
        return "ws://%s:%d%s" % (self.host, self.port, path)

    def http(self, path):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s; returns the exit code (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


BASE_CONFIG = {
    "address": "127.0.0.1",
    "port": 0,
    "loglevel": "info",
    "max_message_bytes": 16777216,
    # Generous bounds: these tests check byte-identical relay, not the slow-watcher policy,
    # and must not flake on a loaded machine.
    "watcher_queue_bytes": 67108864,
    "watcher_max_lag_ms": 10000,
}


def _start(name, **extra):
    cfg = dict(BASE_CONFIG)
    cfg.update(extra)
    return Server(name, cfg)


@pytest.fixture(scope="session")
def server():
    s = _start("server", echo_endpoint="true")
    yield s
    crashed = not s.alive()
    s.stop()
    if crashed:
        pytest.fail("server died during the tests (exit %s); see %s" % (s.proc.returncode, s.log_path))


@pytest.fixture(scope="session")
def server_no_echo():
    s = _start("server-no-echo", echo_endpoint="false")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def server_locked():
    """Publishing needs ?key=s3cret; browsers must come from one of two origins."""
    s = _start("server-locked", publish_key='"s3cret"',
               allowed_origins='"https://cam.example:8443,http://good.example"')
    yield s
    s.stop()


@pytest.fixture(scope="session")
def server_small():
    """Echo with a 64 KiB message limit, for close code 1009."""
    s = _start("server-small", echo_endpoint="true", max_message_bytes=65536)
    yield s
    s.stop()


@pytest.fixture
def start_server():
    """A factory for servers the test owns (e.g. to send them SIGTERM); all stopped afterwards."""
    started = []

    def start(name, **extra):
        s = _start(name, **extra)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def websocat():
    path = os.environ.get("WEBSOCAT") or shutil.which("websocat")
    if not path:
        cand = os.path.expanduser("~/.cargo/bin/websocat")
        path = cand if os.access(cand, os.X_OK) else None
    if not path:
        pytest.fail("websocat not found (tests/interop/run.sh installs it with cargo install --locked websocat)")
    return path


@pytest.fixture(autouse=True)
def _server_still_alive(request):
    yield
    if "server" in request.fixturenames:
        s = request.getfixturevalue("server")
        assert s.alive(), "server died during this test (exit %s); see %s" % (s.proc.returncode, s.log_path)
