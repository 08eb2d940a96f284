"""A real coturn in the lab's internet namespace: STUN and TURN over UDP, TCP and TLS.

It is forked from a thread that sits in the internet namespace (a child
inherits the namespace of the thread that forks it), listens on the lab's
service address only, and relays between the lab's public addresses. TLS uses
a throwaway self-signed certificate made for the service address (an IP
subjectAltName), which the lab's peers are told to trust — verification stays
on. Ready means a STUN Binding over UDP is answered and both TCP listeners
accept, never a sleep. Credentials are coturn's ``use-auth-secret`` (the
time-limited TURN REST scheme ``drift serve --turn-secret`` hands out).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drift.errors import DriftError
from drift.harness.child import Child, NotReady
from drift.harness.coturn import stun_binding_answered
from drift.harness.programs import program
from drift.netlab import namespaces as ns

UDP_TCP_PORT: Final = 3478
TLS_PORT: Final = 5349
#: relay ports: the internet namespace is empty, so any range is free
RELAY_LOW: Final = 20_000


def write_certificate(folder: Path, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` valid for a day; (cert, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drift network lab")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "turn-cert.pem", folder / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def _accepts(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((ip, port)) == 0


class LabCoturn(Child):
    """One turnserver in the internet namespace; ``stop()`` always ends it."""

    def __init__(self, folder: Path, ip: str, relay_ports: int) -> None:
        self.folder = folder
        self.ip = ip
        self.relay_ports = max(64, relay_ports)
        self.secret = secrets.token_hex(16)
        self.cert, self.key = write_certificate(folder, ip)
        # coturn writes its own log into the file the harness reads its tail from
        super().__init__(self._command(), name="turnserver", log_path=folder / "turn.log")

    def urls(self, turn: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(STUN URLs, TURN URLs) for welcome; no TURN URL when ``turn`` is off."""
        stun = (f"stun:{self.ip}:{UDP_TCP_PORT}",)
        if not turn:
            return stun, ()
        return stun, (
            f"turn:{self.ip}:{UDP_TCP_PORT}?transport=udp",
            f"turn:{self.ip}:{UDP_TCP_PORT}?transport=tcp",
            f"turns:{self.ip}:{TLS_PORT}?transport=tcp",
        )

    def _command(self) -> list[str]:
        return [
            program("turnserver", "coturn"), "-n",
            f"--listening-ip={self.ip}", f"--relay-ip={self.ip}",
            f"--listening-port={UDP_TCP_PORT}", f"--tls-listening-port={TLS_PORT}",
            f"--min-port={RELAY_LOW}", f"--max-port={RELAY_LOW + self.relay_ports - 1}",
            "--use-auth-secret", f"--static-auth-secret={self.secret}", "--realm=drift.lab",
            f"--cert={self.cert}", f"--pkey={self.key}",
            "--no-dtls", "--no-cli", "--no-software-attribute",
            # the lab's peers are 10.x homes behind NATs: nothing in the lab is a
            # production network coturn should protect
            "--simple-log", f"--log-file={self.folder / 'turn.log'}", "--no-stdout-log",
            f"--userdb={self.folder / 'turndb'}", f"--pidfile={self.folder / 'turn.pid'}",
        ]  # fmt: skip

    def start_in(self, internet_fd: int, timeout: float = 15.0) -> None:
        """Fork coturn from this thread while it sits in the internet namespace; wait ready."""
        with ns.inside(internet_fd):
            self.spawn()
            # the sweep of a later run finds and ends it if this process is killed
            (self.folder / "coturn.pid").write_text(str(self.pid))
            what = f"STUN on {self.ip}:{UDP_TCP_PORT} and TCP/TLS listeners"
            try:
                # probes from this thread: their sockets live in the internet namespace too
                self.wait_until(self._answers, timeout, what)
            except NotReady as exc:
                raise DriftError(f"coturn did not start in the lab: {exc}") from None

    def _answers(self) -> bool:
        return (
            stun_binding_answered(UDP_TCP_PORT, self.ip)
            and _accepts(self.ip, UDP_TCP_PORT)
            and _accepts(self.ip, TLS_PORT)
        )

    def stop(self, timeout: float = 5.0, *, kill: bool = False) -> int | None:
        return super().stop(timeout, kill=kill)
