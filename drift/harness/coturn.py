"""coturn (``turnserver``) as a child: loopback only, free ports, ``use-auth-secret``.

Ready means a raw STUN Binding request over UDP is answered. coturn takes one
relay port per allocation, so the relay range is sized by the caller and kept
below 32768, out of the kernel's ephemeral range, where other sockets could
take its ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from drift.harness.child import Child
from drift.harness.ports import free_port_block
from drift.harness.programs import program

_MAGIC: Final = 0x2112A442
_BINDING_REQUEST: Final = 0x0001
_BINDING_SUCCESS: Final = b"\x01\x01"


def stun_binding_answered(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Send one STUN Binding request (RFC 5389); True when a success reply comes back."""
    txid = os.urandom(12)
    request = struct.pack("!HHI", _BINDING_REQUEST, 0, _MAGIC) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            sock.send(request)
            reply = sock.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return len(reply) >= 20 and reply[0:2] == _BINDING_SUCCESS and reply[8:20] == txid


class Coturn(Child):
    """One turnserver; ``url`` is what ``drift serve --turn-url`` takes."""

    def __init__(
        self,
        secret: str,
        *,
        relay_ports: int = 16,
        extra: Sequence[str] = (),
        ready_timeout: float = 10.0,
    ) -> None:
        binary = program("turnserver", "coturn")
        # the listening port, then the relay range right after it
        self.port = free_port_block(relay_ports + 1)
        self.relay = (self.port + 1, self.port + relay_ports)
        self.workdir = Path(tempfile.mkdtemp(prefix="coturn-"))
        argv = [
            binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}", f"--min-port={self.relay[0]}",
            f"--max-port={self.relay[1]}",
            "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=drift.test",
            # --no-tcp: drift speaks TURN over UDP here, and a TCP listener whose port
            # is taken makes coturn retry its bind forever instead of starting
            "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
            "--simple-log", "--no-stdout-log",
            f"--userdb={self.workdir}/turndb", f"--pidfile={self.workdir}/turn.pid", *extra,
        ]  # fmt: skip
        # coturn writes its own log file (see log_tail); its stdout says nothing.
        super().__init__([*argv, f"--log-file={self.workdir}/turn.log"], name="turnserver")
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of coturn's own log (its stdout is silent)."""
        path = self.workdir / "turn.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start(self) -> str:
        self.spawn()
        what = f"a STUN Binding answered on UDP {self.port}"
        self.wait_until(lambda: stun_binding_answered(self.port), self.ready_timeout, what)
        return self.url

    def stop(self, timeout: float = 15.0, *, kill: bool = False) -> int | None:
        code = super().stop(timeout, kill=kill)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code


@contextmanager
def run_coturn(secret: str, relay_ports: int = 16, extra: Sequence[str] = ()) -> Iterator[Coturn]:
    """A started :class:`Coturn`, stopped (and its files removed) on the way out."""
    with Coturn(secret, relay_ports=relay_ports, extra=extra) as server:
        yield server
