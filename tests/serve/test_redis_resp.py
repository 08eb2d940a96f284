"""drift.serve.resp against a real redis-server: the wire under the cluster's hot path."""

from __future__ import annotations

import hiredis
import pytest

from drift.harness.redis import RedisServer
from drift.harness.waiting import until
from drift.serve.resp import Address, Connection, Publisher, pack

#: Seconds for any one step against the local Redis.
STEP = 2.0


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("drift:inbox:node-1", b'["relay","a","b","r","{\\"type\\":\\"offer\\"}"]'),
        ("drift:inbox:n\u00f6de", b""),
        ("c", bytes(range(256)) * 40),
    ],
)
def test_a_hand_packed_publish_is_the_command_hiredis_packs(channel: str, message: bytes) -> None:
    # pack() is hiredis's packer: the hand-packed bytes must be exactly its own.
    assert Publisher(channel).pack(message) == pack(("PUBLISH", channel, message))


def test_addresses_come_from_the_same_urls_as_redis_py() -> None:
    assert Address.from_url("redis://127.0.0.1:6390/3") == Address("127.0.0.1", 6390, db=3)
    login = Address.from_url("redis://user:secret@redis.example:7000/0")
    assert (login.username, login.password, login.port) == ("user", "secret", 7000)
    assert Address.from_url("rediss://redis.example/0").tls
    assert Address.from_url("unix:///run/redis.sock?db=2") == Address(path="/run/redis.sock", db=2)


async def test_replies_come_back_in_the_order_of_the_commands(redis_url: str) -> None:
    conn = await Connection.open(Address.from_url(redis_url), STEP, encoding="utf-8")
    try:
        commands = [
            ("SET", "k", "v"),
            ("GET", "k"),
            ("INCR", "n"),
            ("NO-SUCH-COMMAND",),
            ("GET", "k"),
        ]
        conn.send([pack(command) for command in commands])
        ok, value, count, error, again = await conn.replies(len(commands))
        assert (ok, value, count, again) == ("OK", "v", 1, "v")
        assert isinstance(error, hiredis.ReplyError)
    finally:
        conn.close()


async def test_a_subscriber_reads_every_message_in_order_across_reads(redis_url: str) -> None:
    address = Address.from_url(redis_url)
    inbox = await Connection.open(address, STEP)
    stream = await Connection.open(address, STEP)
    try:
        inbox.send([pack(("SUBSCRIBE", "inbox"))])
        assert (await inbox.read())[0] == [b"subscribe", b"inbox", 1]
        publish = Publisher("inbox")
        # Messages up to 30 KB: replies that span several reads of the socket.
        sent = [b"%d:" % i + b"x" * (i * 997 % 30_000) for i in range(400)]
        for start in range(0, len(sent), 100):
            # As the backend sends a run of frames: no reply per PUBLISH, one +OK.
            batch = [pack(("CLIENT", "REPLY", "OFF"))]
            batch += [publish.pack(message) for message in sent[start : start + 100]]
            batch.append(pack(("CLIENT", "REPLY", "ON")))
            stream.send(batch)
            assert await stream.replies(1) == [b"OK"]
        received: list[bytes] = []
        while len(received) < len(sent):
            for reply in await inbox.read():
                assert reply[:2] == [b"message", b"inbox"]
                received.append(reply[2])
        assert received == sent
    finally:
        inbox.close()
        stream.close()


async def test_a_connection_redis_closed_says_so_before_anything_is_sent(
    redis_url: str, redis_proc: RedisServer
) -> None:
    conn = await Connection.open(Address.from_url(redis_url), STEP)
    try:
        assert not conn.closed
        redis_proc.stop()
        await until(lambda: conn.closed, STEP)
    finally:
        conn.close()
        redis_proc.start()
