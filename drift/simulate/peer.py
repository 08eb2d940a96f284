"""One synthetic peer's rounds: connect, join, wait for a match, run the call, maybe next.

The peer joins through the protocol client, waits for ``matched``, and runs each
round's :class:`~drift.simulate.call.Call` (negotiation, trickle ICE, the
data-channel check) until the :class:`~drift.simulate.dialect.Dialect`'s goal,
then holds and leaves or presses ``next`` for a second round. It only
*records* what it saw (:class:`~drift.simulate.records.PeerRecord`); whether
the pair is verified is decided by :mod:`drift.simulate.verify`, which sees
both sides of every room.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from drift.client.signaling import ClientState, ConnectionClosed, ProtocolViolation, SignalingClient
from drift.core import protocol as p
from drift.simulate.call import Call, PeerFailed
from drift.simulate.call_reports import relay_protocol, report_for
from drift.simulate.dialect import DRIFT_PEERS, Dialect
from drift.simulate.records import Failure, PeerRecord, RoundRecord
from drift.simulate.relays import digest
from drift.simulate.settings import Settings

_CONNECT_ERRORS: Final = (OSError, aiohttp.ClientError, TimeoutError)


@dataclass(slots=True)
class Release:
    """Set by the runner when waiting peers should give up (nobody left to pair with)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0


class SyntheticPeer:
    """Runs one peer from connect to close and fills its :class:`PeerRecord`."""

    def __init__(
        self,
        record: PeerRecord,
        settings: Settings,
        *,
        dialect: Dialect = DRIFT_PEERS,
        session: aiohttp.ClientSession | None = None,
        release_source: Callable[[], Release] | None = None,
        media_for_offer: Callable[[], bool] | None = None,
        on_state: Callable[[str, str], None] | None = None,
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.record = record
        self.settings = settings
        self.dialect = dialect
        self.session = session
        fixed = Release()
        #: where to find the current release order (the runner renews it after each)
        self.release_source = release_source or (lambda: fixed)
        #: whether this peer's next offer carries video (the runner's media share)
        self.media_for_offer = media_for_offer or (lambda: False)
        self.on_state = on_state or (lambda old, new: None)
        self.connect_gate = connect_gate
        self.peer_id = ""
        self.next_selected = record.next_selected
        self.client: SignalingClient | None = None
        self.call: Call | None = None
        self.state = "pending"
        self.partner_next = False
        self.partner_left: asyncio.Future[str] | None = None

    def _set_state(self, new: str) -> None:
        old, self.state = self.state, new
        if old != new:
            self.on_state(old, new)

    async def run(self) -> PeerRecord:
        rec = self.record
        self._set_state("connecting")
        try:
            async with self.connect_gate or contextlib.nullcontext():
                client = await SignalingClient.connect(
                    rec.url, session=self.session, timeout=self.settings.timeout
                )
        except ProtocolViolation as exc:
            return self._finish(Failure.SIGNALING_ERROR, str(exc))
        except ConnectionClosed as exc:
            return self._finish(Failure.SIGNALING_ERROR, f"closed before welcome: {exc}")
        except _CONNECT_ERRORS as exc:
            return self._finish(Failure.UNREACHABLE, f"{type(exc).__name__}: {exc}")
        self.client = client
        rec.t_connected = client.marks.get("connected")
        rec.t_welcome = client.marks.get("welcome")
        rec.peer_id = self.peer_id = client.peer_id
        self._set_state("connected")
        try:
            await self._rounds(client)
        except ProtocolViolation as exc:
            self._fail_round(Failure.SIGNALING_ERROR, str(exc))
        except ConnectionClosed as exc:
            self._fail_round(Failure.SIGNALING_ERROR, f"server closed the WebSocket: {exc}")
        except PeerFailed as exc:
            self._fail_round(exc.kind, exc.detail)
        finally:
            if self.call is not None:
                await self.call.close()
            if rec.rounds:
                await self._report(client, rec.rounds[-1])
            rec.stale_relays = client.counters.stale_relays
            last = rec.rounds[-1] if rec.rounds else None
            if last is not None and last.room_id is not None and last.own_end is None:
                # closing the socket ends the room: the partner is told "disconnected"
                last.own_end, last.t_own_end = "close", time.monotonic()
            await client.close()
        return self._finish(None, None)

    def _finish(self, kind: Failure | None, detail: str | None) -> PeerRecord:
        rec = self.record
        if kind is not None:
            rec.failure, rec.detail = kind.value, detail
        rec.t_done = time.monotonic()
        failed = rec.failure or any(r.failure for r in rec.rounds)
        self._set_state("failed" if failed else "done")
        return rec

    def _fail_round(self, kind: Failure, detail: str) -> None:
        if self.record.rounds and self.record.rounds[-1].failure is None:
            rnd = self.record.rounds[-1]
            rnd.failure, rnd.detail, rnd.ended_by = kind.value, detail, "failure"
            rnd.t_end = rnd.t_end or time.monotonic()
        elif not self.record.rounds:
            self.record.failure, self.record.detail = kind.value, detail

    async def _rounds(self, client: SignalingClient) -> None:
        await client.join()
        rnd = self._new_round(1, client.marks["join"])
        if not await self._wait_match(client, rnd):
            return
        await self._run_call(client, rnd)
        await self._report(client, rnd)  # before next: the room must still be its last
        if not self.dialect.presses_next(self, rnd):
            return
        # round 2: skip this partner; a new, different, verified partner must follow
        rnd.pressed_next = True
        if client.state is ClientState.MATCHED:
            rnd.own_end, rnd.t_own_end = "next", time.monotonic()
            await client.next()
            at = client.marks["next"]
        else:
            await client.join()
            at = client.marks["join"]
        rnd2 = self._new_round(2, at)
        if not await self._wait_match(client, rnd2):
            return
        await self._run_call(client, rnd2)

    async def _report(self, client: SignalingClient, rnd: RoundRecord) -> None:
        """Send this round's call-report once, when the server takes them; record what was sent."""
        if rnd.call_report is not None or p.FEATURE_CALL_REPORT not in client.features:
            return
        report = report_for(rnd, relay_protocol(client.ice_servers))
        if report is None:
            return
        with contextlib.suppress(*_CONNECT_ERRORS, ConnectionError):
            await client.send_call_report(report)
            rnd.call_report = report  # only once it went out: the cross-check counts it

    def _new_round(self, number: int, at: float) -> RoundRecord:
        rnd = RoundRecord(number=number, t_join=at)
        self.record.rounds.append(rnd)
        return rnd

    async def _wait_match(self, client: SignalingClient, rnd: RoundRecord) -> bool:
        """Wait for matched; False when released while waiting (no partner is coming)."""
        order = self.release_source()
        release = asyncio.ensure_future(order.event.wait())
        try:
            while True:
                recv = asyncio.ensure_future(client.recv())
                done, _ = await asyncio.wait({recv, release}, return_when=asyncio.FIRST_COMPLETED)
                if recv in done and self._early_relay(recv, rnd):
                    continue
                if recv not in done:
                    recv.cancel()
                    with contextlib.suppress(BaseException):
                        await recv
                    # released: nobody left to pair with (or the server never pairs)
                    if client.state is ClientState.WAITING:
                        self.record.released_waiting = order.waiting
                        rnd.t_end = time.monotonic()
                        rnd.ended_by = "released"
                        await client.leave()
                        return False
                    # not waiting at that moment: listen for the next order instead
                    order = self.release_source()
                    release = asyncio.ensure_future(order.event.wait())
                    continue
                msg = recv.result()
                if isinstance(msg, p.Waiting):
                    rnd.t_waiting = client.marks["waiting"]
                    self._set_state("waiting")
                elif isinstance(msg, p.Matched):
                    match = client.match
                    assert match is not None
                    rnd.t_matched = match.at
                    rnd.role, rnd.room_id = match.role, match.room_id
                    rnd.waited, rnd.expected_role = match.waited, match.expected_role
                    self._set_state("matched")
                    if rnd.t_early_relay is not None:
                        ahead = rnd.t_matched - rnd.t_early_relay
                        rnd.failure = Failure.LATE_MATCHED.value
                        rnd.detail = (
                            f"a relayed frame arrived {ahead:.2f} s before this peer's matched"
                            f" (room {rnd.room_id}): the partner was told first"
                        )
                        rnd.ended_by, rnd.t_end = "failure", time.monotonic()
                        raise PeerFailed(Failure.LATE_MATCHED, rnd.detail)
                    if not match.role_ok:
                        rnd.failure = Failure.SWAPPED_ROLES.value
                        rnd.detail = (
                            f"told {match.role} after {'waiting' if match.waited else 'joining'}"
                            f" (expected {match.expected_role})"
                        )
                    return True
                elif isinstance(msg, p.PartnerLeft) and client.state is ClientState.IDLE:
                    # the partner left as we pressed next: the server refuses our next
                    # (absorbed by the client), so join afresh
                    await client.join()
                elif isinstance(msg, p.Error) and msg.code == p.ErrorCode.QUEUE_TIMEOUT:
                    # the server's queue timeout (a long run's odd one out): wait again
                    await client.join()
                elif isinstance(msg, p.Error):
                    raise ProtocolViolation(f"error {msg.code} while waiting: {msg.message}")
                else:
                    raise ProtocolViolation(f"unexpected {type(msg).__name__} while waiting")
        finally:
            release.cancel()

    @staticmethod
    def _early_relay(recv: asyncio.Future[p.ServerMessage], rnd: RoundRecord) -> bool:
        """A relay that came before matched: recorded (and the round fails on matched).

        True when ``recv`` failed on such a frame; its digest tells the verdict
        whether it came from this round's partner (``late-matched``: the server
        told the partner first) or from another room (``cross-wired``).
        """
        exc = recv.exception()
        frame = exc.frame if isinstance(exc, ProtocolViolation) else None
        if not isinstance(frame, p.Offer | p.Answer | p.IceCandidate):
            return False
        rnd.relays_received.append(digest(frame))
        if rnd.t_early_relay is None:
            rnd.t_early_relay = time.monotonic()
        return True

    async def _run_call(self, client: SignalingClient, rnd: RoundRecord) -> None:
        """Negotiate, reach the dialect's goal, settle; end the room's call.

        Raises PeerFailed on failure.
        """
        settings, dialect = self.settings, self.dialect
        assert rnd.role is not None
        want_media = dialect.sends_media(rnd.role, self.media_for_offer)
        rnd.media = want_media and dialect.verifies_media
        call = self.call = Call(
            peer_id=self.peer_id,
            next_selected=self.next_selected,
            rnd=rnd,
            servers=client.ice_servers,
            settings=settings,
            dialect=dialect,
            want_media=want_media,
        )
        self._set_state("negotiating")
        partner_left = self.partner_left = asyncio.get_running_loop().create_future()
        reader = asyncio.ensure_future(call.pump(client, partner_left))
        if rnd.media:
            call.tasks.append(asyncio.ensure_future(call.watch_media()))
        deadline = time.monotonic() + settings.timeout
        try:
            if rnd.role == "offerer":
                await call.offer(client)
            await self.until(call, dialect.goal(call), deadline, "verification")
            rnd.t_verified = rnd.t_verified or time.monotonic()
            self._set_state("verified")
            await dialect.settle(self, call, deadline)
            rnd.ended_by = rnd.ended_by or "hold"
        except PeerFailed as exc:
            rnd.failure = rnd.failure or exc.kind.value
            rnd.detail = rnd.detail or exc.detail
            rnd.ended_by = rnd.ended_by or "failure"
            raise
        finally:
            rnd.t_end = time.monotonic()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            if call.failure.done() and rnd.failure is None:
                failed = call.failure.result()
                rnd.failure, rnd.detail = failed.kind.value, failed.detail
            self.partner_next = call.partner_next
            self.call = None
            await call.close()

    async def until(self, call: Call, goal: asyncio.Event, deadline: float, what: str) -> None:
        """Wait for ``goal`` until ``deadline``; PeerFailed on failure, timeout or partner gone.

        The partner leaving ends the wait for its own check (``call.partner_done``)
        without a failure: both sides had what they needed by then.
        """
        waiter = asyncio.ensure_future(goal.wait())
        assert self.partner_left is not None
        watch: set[asyncio.Future[Any]] = {waiter, call.failure, self.partner_left}
        try:
            await asyncio.wait(
                watch,
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if call.failure.done():
            failed = call.failure.result()
            if failed.kind is Failure.CROSS_WIRED:
                # stay until the deadline: every misrouted frame that still arrives
                # names another room involved (the others are waiting that long anyway)
                linger = max(0.0, deadline - time.monotonic())
                await asyncio.wait({self.partner_left}, timeout=linger)
            raise failed
        if goal.is_set():
            return
        if self.partner_left.done():
            reason = self.partner_left.result()
            if goal is call.partner_done:
                return  # the partner went away after both sides had what they needed
            raise PeerFailed(
                Failure.PARTNER_LEFT, f"the server said the partner left ({reason}) before {what}"
            )
        call.rnd.ended_by = call.rnd.ended_by or "timeout"
        raise PeerFailed(
            Failure.TIMEOUT, f"no {what} within the {self.settings.timeout:g} s timeout"
        )

    async def hold(self, seconds: float) -> None:
        """Keep the call up for ``seconds``, or until the partner leaves."""
        if seconds <= 0:
            return
        assert self.partner_left is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.partner_left), seconds)
