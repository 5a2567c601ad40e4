"""Where the broker tests find NATS JetStream and RabbitMQ, and a private NATS server to kill.

The servers are `FABULA_NATS_URL` and `FABULA_AMQP_URL` (default: the
local ones). Where one is not reachable its tests skip, saying why; with
`FABULA_REQUIRE_BROKERS=1` (as CI sets) they fail instead. A test that
stops a server starts a private one (`PrivateNats`) and never touches
the shared ones.
"""

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

NATS_URL = os.environ.get("FABULA_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("FABULA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REQUIRED = os.environ.get("FABULA_REQUIRE_BROKERS") == "1"


@functools.cache
def unreachable(url: str) -> str | None:
    """Why nothing listens at `url`'s host and port, or None."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 0), timeout=3):
            return None
    except OSError as exc:
        return f"nothing answers at {parts.hostname}:{parts.port}: {exc}"


def require(url: str) -> str:
    """Return `url`, or skip (fail, if required) when its server is not there."""
    reason = unreachable(url)
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"FABULA_REQUIRE_BROKERS=1, but {reason}")
        pytest.skip(reason)
    return url


def tag() -> str:
    """A name part no other test uses (streams, exchanges, queues)."""
    return uuid.uuid4().hex[:10]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateNats:
    """A `nats-server -js` of the test's own, on a free port, with its store in `folder`."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            reason = "nats-server is not installed: the tests that stop a server need their own"
            if REQUIRED:
                pytest.fail(f"FABULA_REQUIRE_BROKERS=1, but {reason}")
            pytest.skip(reason)
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        command = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-sd", str(self.folder)]
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        msg = f"the private nats-server did not start: {(self.folder / 'server.log').read_text()}"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL the server and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)
        self.process = None


@contextlib.contextmanager
def private_nats(folder: Path) -> Iterator[PrivateNats]:
    """A started private server, killed when the block ends."""
    server = PrivateNats(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()
