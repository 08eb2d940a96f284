"""The per-process DTLS certificate pool: distinct certificates, made once, aiortc untouched."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate, certificate_digest

from drift.simulate.certificates import POOL_SIZE, PooledCertificate, peer_connection


def _certificate(pc: RTCPeerConnection) -> RTCCertificate:
    chosen = pc._RTCPeerConnection__certificates  # type: ignore[attr-defined]
    assert len(chosen) == 1
    cert = chosen[0]
    assert isinstance(cert, RTCCertificate)
    return cert


async def test_the_pool_hands_out_distinct_certificates_round_robin() -> None:
    config = RTCConfiguration(iceServers=[])
    pcs = [peer_connection(config) for _ in range(POOL_SIZE + 1)]
    try:
        certs = [_certificate(pc) for pc in pcs]
        assert all(isinstance(c, PooledCertificate) for c in certs)
        first = certs[:POOL_SIZE]
        fingerprints = {c.getFingerprints()[0].value for c in first}
        assert len(fingerprints) == POOL_SIZE  # neighbours never share one
        assert certs[POOL_SIZE] is certs[0]  # then the cycle starts again
    finally:
        for pc in pcs:
            await pc.close()


async def test_a_plain_peer_connection_still_makes_its_own_certificate() -> None:
    config = RTCConfiguration(iceServers=[])
    pooled = peer_connection(config)
    plain = RTCPeerConnection(config)
    try:
        assert not isinstance(_certificate(plain), PooledCertificate)
        assert "generateCertificate" in RTCCertificate.__dict__
        assert RTCCertificate.generateCertificate() is not _certificate(pooled)
    finally:
        await pooled.close()
        await plain.close()


def test_fingerprints_and_contexts_are_made_once_and_stay_right() -> None:
    cert = PooledCertificate(RTCCertificate.generateCertificate())
    want = {
        f.algorithm: certificate_digest(cert._cert, f.algorithm) for f in cert.getFingerprints()
    }
    assert want and {f.algorithm: f.value for f in cert.getFingerprints()} == want
    # a caller may change the list it gets without changing the certificate's
    cert.getFingerprints().clear()
    assert len(cert.getFingerprints()) == len(want)
    profiles = list(SRTP_PROFILES)
    assert cert._create_ssl_context(profiles) is cert._create_ssl_context(list(profiles))
    assert cert._create_ssl_context(profiles[:1]) is not cert._create_ssl_context(profiles)
