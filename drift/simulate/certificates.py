"""DTLS certificates of the simulated peers: a small pool per process, not one per call.

aiortc gives every ``RTCPeerConnection`` a new EC key and self-signed
certificate (~0.3 ms of CPU), builds a new OpenSSL context from them when DTLS
starts (~0.5 ms: the key and certificate are serialised and parsed again) and
hashes the certificate with three algorithms each time its fingerprints are
asked for (~0.3 ms per call over a call's life). That is ~1 ms per peer,
measured with cProfile (docs/performance.md), spent on nothing a signaling
server can see. The peers of one process therefore take their certificate
from a pool of :data:`POOL_SIZE`, round robin, each with its fingerprints and
its OpenSSL context made once.

What still holds: every DTLS handshake is real and every peer checks its
partner's certificate against the fingerprint in the partner's SDP, so an
altered fingerprint still fails as ``dtls-failed``. What is weaker: a DTLS
session crossed between two peers of one process that drew the same
certificate (1 in :data:`POOL_SIZE`) would pass the fingerprint check; the ICE
credentials and the data-channel hello, which names the room, still catch it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Final

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, SRTPProtectionProfile
from OpenSSL import SSL

POOL_SIZE: Final = 8


class PooledCertificate(RTCCertificate):
    """An aiortc certificate whose fingerprints and OpenSSL contexts are made once."""

    def __init__(self, base: RTCCertificate) -> None:
        super().__init__(key=base._key, cert=base._cert)
        self._fingerprints = super().getFingerprints()
        self._contexts: dict[bytes, SSL.Context] = {}

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        # A context only holds the certificate, key, ciphers and SRTP profiles;
        # each DTLS session is its own SSL.Connection made from it.
        key = b":".join(p.openssl_profile for p in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = super()._create_ssl_context(srtp_profiles)
        return context


def _pool() -> Iterator[PooledCertificate]:
    made = [PooledCertificate(RTCCertificate.generateCertificate()) for _ in range(POOL_SIZE)]
    return itertools.cycle(made)


_certificates: Iterator[PooledCertificate] | None = None


def peer_connection(configuration: RTCConfiguration) -> RTCPeerConnection:
    """A new ``RTCPeerConnection`` whose certificate comes from this process's pool."""
    global _certificates
    if _certificates is None:
        _certificates = _pool()
    chosen = next(_certificates)
    # aiortc has no way to pass a certificate in: RTCPeerConnection.__init__
    # calls RTCCertificate.generateCertificate(). Swap that one call for the
    # pool's, only while this constructor runs (peers live on one thread).
    generate = RTCCertificate.__dict__["generateCertificate"]
    RTCCertificate.generateCertificate = classmethod(lambda cls: chosen)  # type: ignore[method-assign,assignment]
    try:
        return RTCPeerConnection(configuration)
    finally:
        RTCCertificate.generateCertificate = generate  # type: ignore[method-assign]
