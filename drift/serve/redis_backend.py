"""The Redis I/O layer of a cluster node: shared queue, node-to-node messages, liveness.

Everything here is transport. The rules stay in the pure core
(:class:`~drift.core.cluster.ClusterLobby`); this module only carries out its
effects and feeds it what Redis answers:

* ``QueueOp`` -> a Lua script, so pairing is atomic across nodes: scan the
  queue from its head, drop entries whose node is dead, skip peers in a
  rematch cooldown with the joiner, pop the first compatible one, else append.
* ``Forward`` -> ``PUBLISH`` on the target node's inbox channel.
* ``Cooldown`` -> a key with a TTL that the scripts consult.
* Liveness: each node refreshes ``node:<id>`` (TTL ``node_ttl``) every
  ``heartbeat`` seconds with its own figures; a node whose key is missing on
  three checks in a row is dead, and its peers' partners get
  ``partner-left/disconnected``. Pub/sub delivers at most once, so a node that
  loses Redis puts its waiting peers back in the queue when Redis returns.

All operations of one node go through one ordered worker, batched into a
pipeline: a peer's ``join`` can never overtake its ``leave``, and every message
a node publishes leaves in the order its core emitted it (a ``Paired`` before
the relays of that room, a cooldown before the ``Left`` that lets the partner
join again). That stream and the inbox subscription carry every relayed frame,
so they speak RESP themselves (:mod:`drift.serve.resp`); the rest goes through
redis-py.

Keys (prefix ``drift:`` by default; a single Redis, not Redis Cluster, since
the scripts touch keys they compute):

=======================  ====================================================
``queue``                list of waiting peer ids, oldest first
``peers``                hash peer id -> node id, for queued peers
``tickets``              hash peer id -> ticket of its entry (the join that wrote it)
``cool:<a>:<b>``         present while a and b may not be paired (a < b)
``node:<id>``            JSON figures of a live node, expires after node_ttl
``nodes``                set of node ids ever seen (pruned when dead)
``matches``              rooms created, cluster-wide
``inbox:<id>``           pub/sub channel of a node
=======================  ====================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from drift.core import node_messages
from drift.core.call_report import merge_snapshots
from drift.core.cluster import ClusterLobby
from drift.core.lobby import Cooldown, Effect, Forward, QueueOp
from drift.serve.resp import Address, Command, Connection, Publisher, RespError, pack

log = logging.getLogger("drift.redis")

# Scans the queue head-first in chunks; the Lua code is the pairing rule's
# shared-queue half (FIFO + not yourself + not cooling down + alive), run
# atomically inside Redis. Returns the partner and this peer's part.
_FIND: Final = """
local q, peers, tickets, pre = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local function alive(node)
  return node and redis.call('EXISTS', pre .. 'node:' .. node) == 1
end
local function cooling(a, b)
  if a > b then a, b = b, a end
  return redis.call('EXISTS', pre .. 'cool:' .. a .. ':' .. b) == 1
end
local function find(me)
  local dead, mine, found, node, pos = {}, nil, nil, nil, 0
  local len = redis.call('LLEN', q)
  local start = 0
  while start < len do
    local chunk = redis.call('LRANGE', q, start, start + 199)
    for _, cand in ipairs(chunk) do
      pos = pos + 1
      if cand == me then
        mine = pos
      elseif not found then
        local n = redis.call('HGET', peers, cand)
        if not alive(n) then
          table.insert(dead, cand)
        elseif not cooling(me, cand) then
          found, node = cand, n
          if mine == nil then mine = -1 end
        end
      end
      if found and mine then break end
    end
    if found and mine then break end
    start = start + 200
  end
  for _, d in ipairs(dead) do
    redis.call('LREM', q, 1, d)
    redis.call('HDEL', peers, d)
    redis.call('HDEL', tickets, d)
  end
  return found, node, mine
end
-- Takes an entry out of the queue; returns the ticket it carried.
local function pop(id)
  local ticket = redis.call('HGET', tickets, id) or '0'
  redis.call('LREM', q, 1, id)
  redis.call('HDEL', peers, id)
  redis.call('HDEL', tickets, id)
  return ticket
end
"""

JOIN_SCRIPT: Final = (
    _FIND
    + """
local me, node, maxq, never, ticket = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
if redis.call('HEXISTS', peers, me) == 1 then
  -- Already queued (a re-join after an outage): keep the place, and the latest
  -- ticket; a node's tickets only grow, and its joins may arrive out of order
  -- when a re-join is put ahead of a join already in flight.
  local held = tonumber(redis.call('HGET', tickets, me) or '0')
  if tonumber(ticket) > held then redis.call('HSET', tickets, me, ticket) end
  return {'waiting'}
end
if never ~= '1' then
  local found, fnode = find(me)
  if found then
    local fticket = pop(found)
    redis.call('INCR', pre .. 'matches')
    return {'matched', found, fnode, fticket, 'newcomer'}
  end
end
if redis.call('LLEN', q) >= maxq then return {'full'} end
redis.call('RPUSH', q, me)
redis.call('HSET', peers, me, node)
redis.call('HSET', tickets, me, ticket)
return {'waiting'}
"""
)

# A cooldown ended: look again for a peer already in the queue. Whoever sits
# closer to the head waited longer and answers.
RETRY_SCRIPT: Final = (
    _FIND
    + """
local me, never, ticket = ARGV[2], ARGV[5], ARGV[6]
if redis.call('HGET', tickets, me) ~= ticket then return {'gone'} end
if never == '1' then return {'waiting'} end
local found, fnode, mine = find(me)
if not found then return {'waiting'} end
local fticket = pop(found)
pop(me)
redis.call('INCR', pre .. 'matches')
if mine == -1 then return {'matched', found, fnode, fticket, 'newcomer'} end
return {'matched', found, fnode, fticket, 'waited'}
"""
)

LEAVE_SCRIPT: Final = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

# Drops queue entries of dead nodes so the queue length is true after a crash.
SWEEP_SCRIPT: Final = """
local q, peers, tickets, pre = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local removed = 0
for _, cand in ipairs(redis.call('LRANGE', q, 0, -1)) do
  local n = redis.call('HGET', peers, cand)
  if not n or redis.call('EXISTS', pre .. 'node:' .. n) == 0 then
    redis.call('LREM', q, 1, cand)
    redis.call('HDEL', peers, cand)
    redis.call('HDEL', tickets, cand)
    removed = removed + 1
  end
end
return removed
"""

QUEUE_SCRIPTS: Final = {"join": JOIN_SCRIPT, "retry": RETRY_SCRIPT, "leave": LEAVE_SCRIPT}


def queue_keys(prefix: str) -> list[str]:
    return [prefix + "queue", prefix + "peers", prefix + "tickets"]


def queue_op_args(
    op: QueueOp, prefix: str, node: str, max_queue: int, never: str
) -> list[str | int]:
    """The ARGV of ``QUEUE_SCRIPTS[op.op]`` (KEYS are ``queue_keys(prefix)``)."""
    if op.op == "leave":
        return [op.peer]
    return [prefix, op.peer, node, max_queue, never, op.ticket]


Apply = Callable[[Sequence[Effect]], Awaitable[None]]

#: What a Redis that cannot be reached, or that refused a command, raises on either path.
UNREACHABLE: Final = (RedisError, OSError, RespError)
#: Seconds to connect; seconds for the replies of one batch.
CONNECT_TIMEOUT: Final = 0.5
REPLY_TIMEOUT: Final = 2.0
#: Most operations in one round trip: bounds a batch's write and its wait for replies.
MAX_BATCH: Final = 1024
#: Batches of relays sent without waiting for their reply, at most, before one waits.
MAX_UNREAD: Final = 64
_REPLY_OFF: Final = pack(("CLIENT", "REPLY", "OFF"))
_REPLY_ON: Final = pack(("CLIENT", "REPLY", "ON"))


class RedisBackend:
    def __init__(
        self,
        url: str,
        lobby: ClusterLobby,
        apply: Apply,
        *,
        max_queue: int,
        never_match: bool = False,
        prefix: str = "drift:",
        heartbeat: float = 1.0,
        node_ttl: float = 5.0,
        misses_for_dead: int = 3,
    ) -> None:
        self.lobby = lobby
        self.node = lobby.node
        #: None until Redis first answered or failed
        self.available: bool | None = None
        self._lost = False
        self.cluster: dict[str, Any] = {}
        self._apply = apply
        self._pre = prefix
        self._queue_keys = queue_keys(prefix)
        self._max_queue = max_queue
        self._never = "1" if never_match else "0"
        self._heartbeat = heartbeat
        self._node_ttl_ms = int(node_ttl * 1000)
        self._misses_for_dead = misses_for_dead
        self._misses: dict[str, int] = {}
        self._run_id: str | None = None
        # The worker's queue: a plain list it takes whole, since every relayed
        # frame passes through it (an asyncio.Queue costs several calls per item).
        self._pending: list[QueueOp | Forward | Cooldown] = []
        self._has_work = asyncio.Event()
        #: set while nothing is pending or in flight
        self._idle = asyncio.Event()
        self._idle.set()
        #: node -> PUBLISH on its inbox channel
        self._inboxes: dict[str, Publisher] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._address = Address.from_url(url)
        #: the ordered command stream of the worker; None until (re)connected
        self._stream: Connection | None = None
        #: replies on the stream of batches sent without waiting (see _execute)
        self._unread = 0
        self._script_shas = {
            op: hashlib.sha1(source.encode()).hexdigest() for op, source in QUEUE_SCRIPTS.items()
        }
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=REPLY_TIMEOUT,
            health_check_interval=0,
        )
        self._sweep = self.redis.register_script(SWEEP_SCRIPT)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._beat()  # first heartbeat now, so we are alive before anyone pairs with us
        for name, job in (
            ("worker", self._work),
            ("listener", self._listen),
            ("heartbeat", self._beat_forever),
        ):
            self._tasks.append(asyncio.create_task(job(), name=f"drift-redis-{name}"))

    async def stop(self) -> None:
        # Let the last partner-left/relay messages out before going away.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), 2.0)
        for task in self._tasks:
            task.cancel()
        # Every step is bounded: a Redis that stopped answering must not keep a
        # draining server from exiting.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 2.0)
        self._drop_stream()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.redis.delete(self._pre + "node:" + self.node)
                await self.redis.srem(self._pre + "nodes", self.node)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), 1.0)

    async def _drain(self) -> None:
        await self._idle.wait()

    def submit(self, effect: QueueOp | Forward | Cooldown) -> None:
        pending = self._pending
        pending.append(effect)
        if len(pending) == 1:
            self._idle.clear()
            self._has_work.set()

    # ------------------------------------------------------------ ordered worker

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._idle.set()
                self._has_work.clear()
                await self._has_work.wait()
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            recovering = self._lost
            if recovering:
                # First thing after an outage: put the peers that were waiting
                # back in the shared queue, ahead of anyone who joined since.
                batch[:0] = self.lobby.rejoin_all()
            try:
                results = await self._execute(batch, heartbeat=recovering)
                self._lost = False
            except UNREACHABLE as exc:
                self._down(exc)
                results = [None] * len(batch)
            effects: list[Effect] = []
            now = loop.time()
            for op, result in zip(batch, results, strict=True):
                if type(op) is QueueOp and op.op != "leave":
                    answer = node_messages.queue_result(result)
                    effects += self.lobby.queue_result(op, answer, now)
            if effects:
                await self._apply(effects)

    async def _execute(
        self, batch: list[QueueOp | Forward | Cooldown], *, heartbeat: bool = False
    ) -> list[Any]:
        """Run ``batch`` in order in one round trip: each queue op's reply, None for the rest."""
        pre, shas, encode = self._pre, self._script_shas, node_messages.encode
        commands: list[bytes] = []  # packed
        #: per reply expected: the index in ``batch`` of the queue op it answers, or -1
        answers: list[int] = []
        if heartbeat:
            # A Redis that restarted empty does not know we are alive yet,
            # and the scripts would take our peers for a dead node's.
            commands += [pack(command) for command in self._heartbeat_commands()]
            answers += (-1, -1)
        # Nothing reads the replies of PUBLISH and SET: a run of them goes between
        # CLIENT REPLY OFF and ON, so Redis answers the run with one +OK instead of
        # one reply per relayed frame (fewer bytes both ways, fewer replies to parse).
        quiet = False
        for i, op in enumerate(batch):
            if type(op) is QueueOp:
                if quiet:
                    commands.append(_REPLY_ON)
                    answers.append(-1)
                    quiet = False
                args = queue_op_args(op, pre, self.node, self._max_queue, self._never)
                commands.append(pack(("EVALSHA", shas[op.op], 3, *self._queue_keys, *args)))
                answers.append(i)
                continue
            if not quiet:
                commands.append(_REPLY_OFF)
                quiet = True
            if type(op) is Forward:
                inbox = self._inboxes.get(op.node) or self._inbox(op.node)
                commands.append(inbox.pack(encode(op.message)))
            elif isinstance(op, Cooldown):
                a, b = sorted((op.a, op.b))
                ms = max(1, int(op.seconds * 1000))
                commands.append(pack(("SET", f"{pre}cool:{a}:{b}", 1, "PX", ms)))
        if quiet:
            commands.append(_REPLY_ON)
            answers.append(-1)
        stream = self._stream
        if stream is None or stream.closed:
            # A connection Redis closed while we were idle (a restart): open a new
            # one before sending, so the batch runs rather than fails.
            self._drop_stream()
            stream = await self._open_stream()
        if answers == [-1] and self._unread < MAX_UNREAD:
            # Only relays (and cooldowns): nothing waits on this batch's one +OK, so
            # the worker goes on to the next batch at once (measured: ~11 % less
            # CPU per relayed frame). The next batch that waits reads it first; one
            # waits at least every MAX_UNREAD batches, so a Redis that stopped
            # answering is still found out, and unread replies stay bounded.
            # Pub/sub delivers at most once anyway: a frame lost with a dead
            # connection was never promised.
            stream.send(commands)
            self._unread += 1
            return [None] * len(batch)
        unread, self._unread = self._unread, 0
        try:
            stream.send(commands)
            async with asyncio.timeout(REPLY_TIMEOUT):
                replies = await stream.replies(unread + len(answers))
        except BaseException:
            # Replies of this batch may still come: the stream is out of step for good.
            self._drop_stream()
            raise
        results: list[Any] = [None] * len(batch)
        for i, reply in zip([-1] * unread + answers, replies, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("NOSCRIPT"):
                    self._drop_stream()  # scripts flushed: the next connection loads them
                # As a pipeline that raises on the first error: the batch failed.
                raise RespError(str(reply))
            if i >= 0:
                results[i] = reply
        self._up()
        return results

    def _inbox(self, node: str) -> Publisher:
        inbox = self._inboxes[node] = Publisher(self._channel(node))
        return inbox

    def _channel(self, node: str) -> str:
        return self._pre + "inbox:" + node

    async def _open_stream(self) -> Connection:
        stream = await Connection.open(self._address, CONNECT_TIMEOUT, encoding="utf-8")
        try:
            # EVALSHA on this stream from now on; a Redis that restarts closes it.
            stream.send([pack(("SCRIPT", "LOAD", source)) for source in QUEUE_SCRIPTS.values()])
            async with asyncio.timeout(REPLY_TIMEOUT):
                loaded = await stream.replies(len(QUEUE_SCRIPTS))
        except BaseException:
            stream.close()
            raise
        if loaded != list(self._script_shas.values()):
            stream.close()
            raise RespError(f"SCRIPT LOAD answered {loaded!r}")
        self._stream = stream
        return stream

    def _drop_stream(self) -> None:
        self._unread = 0
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # ------------------------------------------------------------ messages from other nodes

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        channel = self._channel(self.node)
        deliver, decode, apply = self.lobby.deliver, node_messages.decode, self._apply
        backoff = 0.1
        while True:
            inbox: Connection | None = None
            try:
                inbox = await Connection.open(self._address, CONNECT_TIMEOUT)
                inbox.send([pack(("SUBSCRIBE", channel))])
                backoff = 0.1
                while True:
                    # Everything one read brought, in order, then one apply: the
                    # core's state moves in deliver(), the effects only do I/O.
                    replies = await inbox.read()
                    now = loop.time()
                    effects: list[Effect] = []
                    for reply in replies:
                        # ["message", channel, data]; the subscribe confirmation is not one
                        if type(reply) is list and reply[0] == b"message":
                            message = decode(reply[2])
                            if message is not None:  # else not from a drift node
                                effects += deliver(message, now)
                    if effects:
                        await apply(effects)
            except UNREACHABLE as exc:
                self._down(exc)
            finally:
                if inbox is not None:
                    inbox.close()
            # Reconnect with a capped backoff; waiting here is the point.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # ------------------------------------------------------------ liveness

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            await self._beat()

    def _heartbeat_commands(self) -> list[Command]:
        """Two commands: this node's figures under its presence key, and its name."""
        lobby = self.lobby
        mine = {
            "connections": lobby.connections,
            "waiting": lobby.waiting,
            "rooms": lobby.rooms_hosted,
            "calls": lobby.calls.stats.snapshot(),
        }
        return [
            ("SET", self._pre + "node:" + self.node, json.dumps(mine), "PX", self._node_ttl_ms),
            ("SADD", self._pre + "nodes", self.node),
        ]

    async def _beat(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command in self._heartbeat_commands():
                    pipe.execute_command(*command)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return
        await self._after_beat()

    async def _after_beat(self) -> None:
        pre = self._pre
        try:
            run_id = str((await self.redis.info("server")).get("run_id", ""))
            nodes = sorted(str(n) for n in await self.redis.smembers(pre + "nodes"))
            watched = sorted(self.lobby.remote_nodes())
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.llen(pre + "queue")
                pipe.get(pre + "matches")
                for node in nodes:
                    pipe.get(pre + "node:" + node)
                for node in watched:
                    pipe.exists(pre + "node:" + node)
                replies = await pipe.execute()
            await self._sweep(keys=self._queue_keys, args=[pre])
        except (RedisError, OSError) as exc:
            self._down(exc)
            return
        restarted = self._run_id is not None and run_id != self._run_id
        rejoin = restarted or self._lost
        self._lost = False
        self._run_id = run_id
        self._up()
        queue_len, matches = int(replies[0]), int(replies[1] or 0)
        figures = replies[2 : 2 + len(nodes)]
        alive = replies[2 + len(nodes) :]
        per_node: dict[str, Any] = {}
        for node, raw in zip(nodes, figures, strict=True):
            if raw is None:
                if node not in watched:
                    with contextlib.suppress(RedisError, OSError):
                        await self.redis.srem(pre + "nodes", node)
                continue
            per_node[node] = json.loads(raw)
        self.cluster = {
            "node": self.node,
            "nodes": len(per_node),
            "queue": queue_len,
            "matches_total": matches,
            "connections": sum(int(n.get("connections", 0)) for n in per_node.values()),
            "rooms": sum(int(n.get("rooms", 0)) for n in per_node.values()),
            # call reports of the live nodes (a dead node's go with its figures)
            "calls": merge_snapshots(
                n["calls"] for n in per_node.values() if isinstance(n.get("calls"), dict)
            ),
            "per_node": per_node,
        }
        effects: list[Effect] = []
        loop = asyncio.get_running_loop()
        for node, exists in zip(watched, alive, strict=True):
            if exists:
                self._misses.pop(node, None)
                continue
            self._misses[node] = self._misses.get(node, 0) + 1
            if self._misses[node] >= self._misses_for_dead:
                del self._misses[node]
                log.warning("node_lost", extra={"fields": {"node": node}})
                effects += self.lobby.node_lost(node, loop.time())
        if rejoin:
            # Redis restarted empty, or we could not reach it: our waiting peers
            # may be missing from the shared queue; the join script is idempotent.
            effects += self.lobby.rejoin_all()
        if effects:
            await self._apply(effects)

    def _down(self, exc: BaseException) -> None:
        if self.available is not False:
            log.warning("redis_unavailable", extra={"fields": {"error": str(exc)[:200]}})
        self.available = False
        self._lost = True

    def _up(self) -> None:
        if self.available is not True:
            log.info("redis_available", extra={"fields": {"node": self.node}})
        self.available = True
