"""Free loopback ports: bind port 0, read the port back."""

from __future__ import annotations

import random
import socket


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port the kernel just handed out on ``host`` (TCP, or UDP with ``udp``).

    For a child that cannot bind port 0 and print the port it got; between this
    call and the child's bind another socket may take it, so prefer port 0.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _block_free(host: str, start: int, count: int) -> bool:
    """UDP free on every port of the block, and TCP too on the first."""
    socks: list[socket.socket] = []
    try:
        for port in range(start, start + count):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(udp)
            udp.bind((host, port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(tcp)
        tcp.bind((host, start))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports below the ephemeral range (32768).

    Below it, no socket of another test or tool can take one of them by chance
    between this check and the child's bind (the kernel hands out ephemeral
    ports above it).
    """
    rng = random.Random()
    for _ in range(50):
        start = rng.randrange(20_000, 32_768 - count)
        if _block_free(host, start, count):
            return start
    raise RuntimeError(f"no {count} consecutive free ports below 32768")
