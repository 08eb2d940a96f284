"""A real coturn (``turnserver``) for tests: loopback only, free ports, ``use-auth-secret``.

Ready means a raw STUN Binding request over UDP is answered (never a sleep).
coturn takes one relay port per allocation, so the relay range is sized by the
caller and kept below 32768, out of the kernel's ephemeral range, where other
tests' sockets could take its ports.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.redis import require_binary
from tests.support.wsclient import TIMEOUT

SECRET = "coturn-shared-" + secrets.token_hex(8)
_MAGIC = 0x2112A442


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _range_free(start: int, count: int) -> bool:
    """UDP free on every port, and TCP too on the first (coturn's listening port)."""
    socks: list[socket.socket] = []
    try:
        for port in range(start, start + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(s)
        s.bind(("127.0.0.1", start))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports below the ephemeral range (32768).

    Below it, no socket of another test can take one of them by chance between
    this check and coturn's bind (the kernel hands out ephemeral ports above).
    """
    rng = random.Random()
    for _ in range(50):
        start = rng.randrange(20_000, 32_768 - count)
        if _range_free(start, count):
            return start
    raise RuntimeError(f"no {count} consecutive free ports below 32768")


def stun_binding_answered(port: int, timeout: float = 0.2) -> bool:
    txid = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, _MAGIC) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        try:
            s.send(request)
            reply = s.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return len(reply) >= 20 and reply[0:2] == b"\x01\x01" and reply[8:20] == txid


class Coturn:
    """One turnserver process; ``url`` is what ``drift serve --turn-url`` takes."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], relay: tuple[int, int]):
        self.port, self.proc, self.relay = port, proc, relay

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


@contextmanager
def run_coturn(
    relay_ports: int = 16, secret: str = SECRET, extra: Sequence[str] = ()
) -> Iterator[Coturn]:
    binary = require_binary("turnserver", "coturn")
    # the listening port, then the relay range right after it
    port = free_port_block(relay_ports + 1)
    low, high = port + 1, port + relay_ports
    with tempfile.TemporaryDirectory(prefix="coturn-") as tmp:
        argv = [
            binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={port}", f"--min-port={low}", f"--max-port={high}",
            "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=drift.test",
            # --no-tcp: the tests speak TURN over UDP, and a TCP listener whose port
            # is taken makes coturn retry its bind forever instead of starting
            "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
            "--simple-log", f"--log-file={tmp}/turn.log", "--no-stdout-log",
            f"--userdb={tmp}/turndb", f"--pidfile={tmp}/turn.pid", *extra,
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + TIMEOUT * 2
            while not stun_binding_answered(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = Path(tmp, "turn.log")
                    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                    raise AssertionError(
                        f"turnserver (exit {proc.poll()}) did not answer STUN on {port}:\n{tail}"
                    )
                time.sleep(0.02)  # between polls of readiness, not instead of it
            yield Coturn(port, proc, (low, high))
        finally:
            proc.terminate()
            try:
                proc.wait(TIMEOUT * 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def coturn() -> AsyncIterator[int]:
    """A fresh coturn for one test; yields its UDP port (the shared secret is SECRET)."""
    with run_coturn(relay_ports=16) as server:
        yield server.port
