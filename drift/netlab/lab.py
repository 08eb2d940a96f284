"""Build and remove a sealed lab: one home per peer, a router per home, one internet.

::

    home i (ns)              router i (ns)                     internet (ns)
    peer 10.a.b.2 ── eth0 ═ lan 10.a.b.1   wan 198.19.x.y+2 ═ h<i> 198.19.x.y+1
                             nft: NAT, firewall, loss            lo 198.18.0.1: drift serve,
                             tc: rate (tbf), delay (netem)           coturn (STUN/TURN udp/tcp/tls)
                                                                 sink0 ─ default route to nowhere

Every address is inside the lab: the internet is RFC 2544's 198.18.0.0/15
(servers on 198.18.0.1, router uplinks in 198.19.0.0/16, public homes of NAT
``none`` in 198.18.128.0/17) and NATed homes use 10.0.0.0/8. No namespace of
the lab has a link to the machine's own, and no route leaves it. The
internet's default route goes into a veth whose far end is down, through a
gateway with a permanent neighbour entry: a packet for a private address
(a peer's host candidate) is silently swallowed, as on the real internet,
instead of coturn's send failing with "network unreachable" (which makes
coturn drop the whole allocation).

Namespaces, links and addresses go through pyroute2 (netlink); each router
gets one ``nft -f`` script (:mod:`drift.netlab.router`); rate is a tbf qdisc
(pyroute2); delay/jitter is netem through ``tc``, refused up front with exit
2 where the kernel has no netem.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Final

from pyroute2 import IPRoute

from drift.errors import ConfigError
from drift.netlab import cleanup, requirements
from drift.netlab import namespaces as ns
from drift.netlab.coturn import TLS_PORT, UDP_TCP_PORT, LabCoturn
from drift.netlab.profile import Group, Profile
from drift.netlab.router import router_script

SERVICE_IP: Final = "198.18.0.1"
_UPLINKS: Final = ipaddress.ip_network("198.19.0.0/16")
_PUBLIC_HOMES: Final = ipaddress.ip_network("198.18.128.0/17")
_SINK_ADDR: Final = "198.18.0.5"
_SINK_GATEWAY: Final = "198.18.0.6"
_SINK_MAC: Final = "02:00:00:00:00:06"
#: one /30 per home in each range
MAX_HOMES: Final = _PUBLIC_HOMES.num_addresses // 4
_NFT_THREADS: Final = 4
#: a lab this large is built by this many processes (the small ones by one)
_FORK_FROM: Final = 64
_BUILD_PROCS: Final = 2
_serial = itertools.count(1)


class LabError(ConfigError):
    """The lab could not be built as the profile asks (exit 2)."""


@dataclass(frozen=True, slots=True)
class Seat:
    """Where one peer sits: its home namespace and address, and how it reaches TURN.

    aiortc uses one TURN URL per connection where a browser tries them all, so
    each peer is given the transports its firewall lets through, in the order
    a browser's first successful allocation would pick (UDP first when open;
    a UDP-blocked home alternates TCP and TLS so both are exercised).
    """

    index: int
    group: str
    home: str
    host: str
    turn: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HomeAddresses:
    lan_net: str
    lan_prefix: int
    router_lan: str
    host: str
    uplink_inet: str
    uplink_router: str


def home_addresses(index: int, nat: str) -> HomeAddresses:
    uplink = _UPLINKS.network_address + 4 * index
    if nat == "none":
        lan = _PUBLIC_HOMES.network_address + 4 * index
        prefix = 30
    else:
        lan = ipaddress.IPv4Address(f"10.{index >> 8 & 255}.{index & 255}.0")
        prefix = 24
    return HomeAddresses(
        str(lan), prefix, str(lan + 1), str(lan + 2), str(uplink + 1), str(uplink + 2)
    )


def mac(index: int, role: int) -> str:
    """A fixed, locally administered MAC per link end (role 1-4), for static neighbours."""
    return f"02:d7:{role:02x}:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"


#: link ends of home i: router lan, home eth0, router wan, internet h<i>
_LAN, _ETH0, _WAN, _UPLINK = 1, 2, 3, 4
#: NUD_PERMANENT: the kernel never resolves (ARP) nor garbage-collects the entry
_PERMANENT = 0x80
#: link indexes: chosen in the router, numbered by the kernel in a fresh home (lo = 1)
_H_ETH0, _R_LAN, _R_WAN = 2, 10, 11


def turn_order(group: Group, index: int) -> tuple[str, ...]:
    if group.firewall == "udp-blocked":
        return ("tcp", "tls") if index % 2 == 0 else ("tls", "tcp")
    return ("udp", "tcp", "tls")


def _sysctl(key: str, value: str) -> None:
    """Write a net.* sysctl of the namespace this thread is in."""
    with open(f"/proc/sys/{key.replace('.', '/')}", "w", encoding="ascii") as f:
        f.write(value)


class NetworkLab:
    """One lab for one run: ``with NetworkLab(profile, peers) as lab: ...``.

    ``enter()`` moves the calling thread (the main thread, before the run
    starts its event loop, so that every thread and child process it creates
    follows) into the internet namespace; ``leave()`` moves it back. ``close()``
    removes everything and is safe to call twice; SIGTERM while the lab is up
    becomes KeyboardInterrupt so the same cleanup runs as for Ctrl-C.
    """

    def __init__(self, profile: Profile, peers: int, *, turn: bool = True) -> None:
        if peers > MAX_HOMES:
            raise LabError(f"--network supports at most {MAX_HOMES} peers (one home each)")
        self.profile = profile
        self.peers = peers
        self.turn = turn
        self.tag = f"{os.getpid()}-{next(_serial)}"
        self.state = cleanup.STATE_ROOT / self.tag
        self.names: list[str] = []
        self.seats: list[Seat] = []
        self.internet = ns.ns_name(os.getpid(), f"{self.tag.split('-')[1]}-net")
        self.internet_fd = -1
        self.coturn: LabCoturn | None = None
        self.stun_urls: tuple[str, ...] = ()
        self.turn_urls: tuple[str, ...] = ()
        self._back_fd = -1
        self._old_term: Any = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> NetworkLab:
        if threading.current_thread() is threading.main_thread():
            self._old_term = signal.signal(signal.SIGTERM, _term_as_interrupt)
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def build(self) -> None:
        requirements.require()
        cleanup.sweep_leftovers()
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        self._build_internet()
        groups = self.profile.assign(self.peers)
        prefix = ns.ns_name(os.getpid(), self.tag.split("-")[1])
        for index, group in enumerate(groups):
            # every name is known before any is created, so close() finds them all
            self.names += [f"{prefix}-r{index}", f"{prefix}-h{index}"]
            addr = home_addresses(index, group.nat)
            home = f"{prefix}-h{index}"
            self.seats.append(Seat(index, group.name, home, addr.host, turn_order(group, index)))
        homes = list(enumerate(groups))
        workers = 1 if len(homes) < _FORK_FROM else max(1, min(_BUILD_PROCS, os.cpu_count() or 1))
        children = [
            _fork(functools.partial(self._build_homes, homes[k::workers]))
            for k in range(1, workers)
        ]
        try:
            self._build_homes(homes[0::workers])
        finally:
            problems = [p for p in (_join(child) for child in children) if p]
        if problems:
            raise LabError(problems[0])
        self.coturn = LabCoturn(self.state, SERVICE_IP, relay_ports=2 * self.peers + 64)
        self.coturn.start_in(self.internet_fd)
        self.stun_urls, self.turn_urls = self.coturn.urls(self.turn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.leave()
        if self.coturn is not None:
            self.coturn.stop()
        cleanup.remove_namespaces(list(reversed(self.names)))
        if self.internet_fd >= 0:
            os.close(self.internet_fd)
            self.internet_fd = -1
        shutil.rmtree(self.state, ignore_errors=True)
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None

    def enter(self) -> None:
        if self._back_fd < 0:
            self._back_fd = ns.current_fd()
            ns.setns(self.internet_fd)

    def leave(self) -> None:
        if self._back_fd >= 0:
            ns.setns(self._back_fd)
            os.close(self._back_fd)
            self._back_fd = -1

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    # ------------------------------------------------------------------ building

    def _create(self, role: str) -> int:
        # the owner is the lab's process even when a forked builder creates it
        return ns.create(
            ns.ns_name(int(self.tag.split("-")[0]), f"{self.tag.split('-')[1]}-{role}")
        )

    def _build_internet(self) -> None:
        self.names.append(self.internet)
        self.internet_fd = ns.create(self.internet)
        with ns.inside(self.internet_fd):
            _sysctl("net.ipv4.ip_forward", "1")
            with IPRoute() as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                ipr.addr("add", index=lo, address=SERVICE_IP, prefixlen=32)
                ipr.link("add", ifname="sink0", kind="veth", peer={"ifname": "sink1"})
                sink = ipr.link_lookup(ifname="sink0")[0]
                ipr.link("set", index=sink, state="up")
                ipr.addr("add", index=sink, address=_SINK_ADDR, prefixlen=30)
                # no ARP for the gateway: a packet just leaves into nothing
                _neighbour(ipr, sink, _SINK_GATEWAY, _SINK_MAC)
                ipr.route("add", dst="0.0.0.0/0", gateway=_SINK_GATEWAY, oif=sink)
            if self.profile.needs_netem:
                problem = _tc(["qdisc", "add", "dev", "sink0", "root", "netem", "delay", "1ms"])
                if problem is not None:
                    raise LabError(
                        f"{self.profile.source}: a group asks for delay/jitter, but this "
                        f"kernel has no netem qdisc (sch_netem): {problem}. Remove delay and "
                        "jitter from the profile, or run on a kernel with sch_netem"
                    )

    def _build_homes(self, homes: list[tuple[int, Group]]) -> None:
        """Build these homes; nft runs in other threads while this one builds the next."""
        with ThreadPoolExecutor(_NFT_THREADS, thread_name_prefix="drift-nft") as pool:
            jobs = []
            with ns.inside(self.internet_fd):
                inet = IPRoute()
            try:
                for index, group in homes:
                    router_fd, script = self._build_home(index, group, inet)
                    jobs.append(pool.submit(_nft, router_fd, script))
            finally:
                inet.close()
            for job in jobs:
                job.result()

    def _build_home(self, index: int, group: Group, inet: IPRoute) -> tuple[int, str]:
        """The home and router namespaces of peer ``index``; (router fd, its nft script).

        pyroute2 costs ~0.3 ms of Python per netlink call, so each home takes as
        few as it can: links are created with their index, MAC and state at once
        (a new namespace numbers its links from lo = 1, so the home's eth0 is 2).
        """
        addr = home_addresses(index, group.nat)
        router_fd = self._create(f"r{index}")
        home_fd = self._create(f"h{index}")
        with ns.inside(router_fd):
            _sysctl("net.ipv4.ip_forward", "1")
            with IPRoute() as ipr:
                for link, name, role, far, far_role, far_fd in (
                    (_R_LAN, "lan", _LAN, "eth0", _ETH0, home_fd),
                    (_R_WAN, "wan", _WAN, f"h{index}", _UPLINK, self.internet_fd),
                ):
                    ipr.link(
                        "add", index=link, ifname=name, kind="veth", state="up",
                        address=mac(index, role),
                        peer={"ifname": far, "address": mac(index, far_role), "net_ns_fd": far_fd},
                    )  # fmt: skip
                ipr.addr("add", index=_R_LAN, address=addr.router_lan, prefixlen=addr.lan_prefix)
                ipr.addr("add", index=_R_WAN, address=addr.uplink_router, prefixlen=30)
                ipr.route("add", dst="0.0.0.0/0", gateway=addr.uplink_inet)
                # Static neighbours everywhere: the kernel's neighbour table is shared by
                # all namespaces and overflows (gc_thresh3, 1024 entries) at ~250 homes
                # if every link resolves its peer with ARP.
                _neighbour(ipr, _R_LAN, addr.host, mac(index, _ETH0))
                _neighbour(ipr, _R_WAN, addr.uplink_inet, mac(index, _UPLINK))
                self._shape(ipr, group, {"wan": _R_WAN, "lan": _R_LAN})
        with ns.inside(home_fd), IPRoute() as ipr:
            ipr.link("set", index=_H_ETH0, state="up")  # lo stays down: nothing uses it
            ipr.addr("add", index=_H_ETH0, address=addr.host, prefixlen=addr.lan_prefix)
            ipr.route("add", dst="0.0.0.0/0", gateway=addr.router_lan)
            _neighbour(ipr, _H_ETH0, addr.router_lan, mac(index, _LAN))
        os.close(home_fd)
        link = inet.link_lookup(ifname=f"h{index}")[0]
        inet.link("set", index=link, state="up")
        inet.addr("add", index=link, address=addr.uplink_inet, prefixlen=30)
        _neighbour(inet, link, addr.uplink_router, mac(index, _WAN))
        if group.nat == "none":
            inet.route("add", dst=f"{addr.lan_net}/{addr.lan_prefix}", gateway=addr.uplink_router)
        script = router_script(
            group, service_ip=SERVICE_IP, turn_tcp_ports=(UDP_TCP_PORT, TLS_PORT)
        )
        return router_fd, script

    def _shape(self, ipr: IPRoute, group: Group, links: dict[str, int]) -> None:
        """Rate (tbf) and delay (netem) on both links of the router, i.e. each way."""
        if group.delay_ms > 0 or group.jitter_ms > 0:
            for name in links:
                argv = ["qdisc", "add", "dev", name, "root", "netem",
                        "delay", f"{group.delay_ms:g}ms", f"{group.jitter_ms:g}ms"]  # fmt: skip
                if group.rate_bps:
                    argv += ["rate", f"{group.rate_bps}bit"]
                problem = _tc(argv)
                if problem is not None:
                    raise LabError(f"netem on the router of group {group.name}: {problem}")
        elif group.rate_bps:
            burst = max(group.rate_bps // 8 // 50, 4096)  # 20 ms of traffic, at least a few MTUs
            for idx in links.values():
                ipr.tc("add", "tbf", idx, rate=f"{group.rate_bps}bit", burst=burst, latency=100)

    # ------------------------------------------------------------------ reading

    def seat(self, index: int) -> Seat:
        return self.seats[index]

    def loss_counters(self) -> dict[str, dict[str, int]]:
        """Per lossy group: packets seen and dropped by its routers' loss rules, each way."""
        totals: dict[str, dict[str, int]] = {}
        lossy = {g.name for g in self.profile.groups if g.loss > 0}
        for seat in self.seats:
            if seat.group not in lossy:
                continue
            router = seat.home[: -len(f"h{seat.index}")] + f"r{seat.index}"
            fd = ns.open_ns(router)
            try:
                with ns.inside(fd):
                    done = subprocess.run(
                        ["nft", "-j", "list", "counters", "table", "ip", "drift"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
            finally:
                os.close(fd)
            group = totals.setdefault(seat.group, {})
            for item in json.loads(done.stdout).get("nftables", []):
                counter = item.get("counter")
                if counter:
                    group[counter["name"]] = group.get(counter["name"], 0) + counter["packets"]
        return totals


def _fork(build: Callable[[], None]) -> tuple[int, int]:
    """Run ``build`` in a forked child (pyroute2 is CPU-bound Python: a second core
    halves a large lab's build); (pid, read end of the pipe carrying its error)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, report, and leave without running the parent's cleanup
        os.close(read)
        code = 0
        try:
            build()
        except BaseException as exc:
            os.write(write, (str(exc) or type(exc).__name__).encode()[:4000])
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _join(child: tuple[int, int]) -> str:
    pid, read = child
    with os.fdopen(read, "rb") as pipe:
        problem = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if not problem and status != 0:
        problem = f"a lab builder process ended with status {status}"
    return problem


def _neighbour(ipr: IPRoute, link: int, ip: str, lladdr: str) -> None:
    ipr.neigh("add", dst=ip, lladdr=lladdr, ifindex=link, state=_PERMANENT)


def _term_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _nft(router_fd: int, script: str) -> None:
    """Load one router's script (nft forks from this thread, so it runs in the router)."""
    try:
        with ns.inside(router_fd):
            done = subprocess.run(
                ["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False
            )
    finally:
        os.close(router_fd)
    if done.returncode != 0:
        raise LabError(f"nft refused a router script: {done.stderr.strip()}\n{script}")


def _tc(argv: list[str]) -> str | None:
    """Run ``tc`` in this thread's namespace; None on success, else its first error line."""
    done = subprocess.run(["tc", *argv], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if lines else f"tc exited with {done.returncode}"
