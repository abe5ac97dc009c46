"""The frame-stream handshake: its sans-I/O core fed bytes, and its glue on loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.handshake import (
    HANDSHAKE_BYTES,
    HANDSHAKE_VERSION,
    MAGIC,
    NONCE_BYTES,
    OPENING_BYTES,
    PROOF_BYTES,
    Handshake,
    HandshakeRefused,
    Refusal,
    RefusalLog,
    Role,
    new_cluster_secret,
    parse_cluster_secret,
)
from actors.messages import PROTOCOL_VERSION, Hello, encode
from actors.stream import StreamGuard, open_stream
from tests.conftest import wait_until

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


def opening(role: Role, nonce: bytes = b"\x07" * NONCE_BYTES) -> bytes:
    return MAGIC + bytes([HANDSHAKE_VERSION]) + role.value + nonce


def run(gateway: Handshake, host: Handshake) -> None:
    """Carry bytes both ways until neither side has anything to send."""
    to_host, to_gateway = gateway.data_to_send(), host.data_to_send()
    while to_host or to_gateway:
        if to_host:
            host.receive_data(to_host)
        if to_gateway:
            gateway.receive_data(to_gateway)
        to_host, to_gateway = gateway.data_to_send(), host.data_to_send()


def refusal_of(handshake: Handshake, data: bytes) -> Refusal:
    with pytest.raises(HandshakeRefused) as refused:
        handshake.receive_data(data)
    assert handshake.refused is refused.value.refusal
    assert not handshake.established
    return refused.value.refusal


# -- the core ----------------------------------------------------------------


def test_peers_that_share_the_secret_authenticate_each_other() -> None:
    gateway, host = Handshake(SECRET, Role.GATEWAY), Handshake(SECRET, Role.HOST)
    run(gateway, host)
    assert gateway.established and host.established
    assert gateway.bytes_expected == host.bytes_expected == 0
    # Each side took exactly the other's opening and proof, nothing more.
    assert gateway.received == host.received == HANDSHAKE_BYTES


def test_the_host_proves_nothing_to_a_peer_that_has_not_proved_itself() -> None:
    host = Handshake(SECRET, Role.HOST)
    host.data_to_send()  # its opening
    stranger = Handshake(OTHER_SECRET, Role.GATEWAY)
    host.receive_data(stranger.data_to_send())
    assert host.data_to_send() == b""  # the host waits for the gateway's proof
    stranger.receive_data(opening(Role.HOST, b"\x01" * NONCE_BYTES))
    assert refusal_of(host, stranger.data_to_send()) is Refusal.BAD_PROOF
    assert host.data_to_send() == b""  # and, refused, it still sent no proof


def test_a_host_without_the_secret_is_refused_by_the_gateway() -> None:
    gateway, impostor = Handshake(SECRET, Role.GATEWAY), Handshake(OTHER_SECRET, Role.HOST)
    impostor.receive_data(gateway.data_to_send())
    gateway.receive_data(impostor.data_to_send())
    gateway.data_to_send()  # the gateway's proof, which the impostor cannot check
    forged = impostor._proof(Role.HOST)  # a host proof made with another secret
    assert refusal_of(gateway, forged) is Refusal.BAD_PROOF


def test_a_reflected_proof_fails() -> None:
    # A fake host that hands the gateway its own proof back, as the host's proof.
    gateway = Handshake(SECRET, Role.GATEWAY)
    gateway.data_to_send()
    gateway.receive_data(opening(Role.HOST))
    own_proof = gateway.data_to_send()
    assert len(own_proof) == PROOF_BYTES
    assert refusal_of(gateway, own_proof) is Refusal.BAD_PROOF


def test_a_reflected_opening_fails() -> None:
    host = Handshake(SECRET, Role.HOST, nonce=b"\x05" * NONCE_BYTES)
    echoed = host.data_to_send()
    assert refusal_of(host, echoed) is Refusal.ROLE  # it says "host", the host expects a gateway
    host = Handshake(SECRET, Role.HOST, nonce=b"\x05" * NONCE_BYTES)
    same_nonce = opening(Role.GATEWAY, b"\x05" * NONCE_BYTES)
    assert refusal_of(host, same_nonce) is Refusal.REFLECTED


def test_a_proof_recorded_on_one_link_is_worthless_on_the_next() -> None:
    gateway, host = Handshake(SECRET, Role.GATEWAY), Handshake(SECRET, Role.HOST)
    recorded = gateway.data_to_send()
    host.receive_data(recorded)
    gateway.receive_data(host.data_to_send())
    recorded += gateway.data_to_send()  # the opening and the proof an eavesdropper saw
    replayed_to = Handshake(SECRET, Role.HOST)
    assert refusal_of(replayed_to, recorded) is Refusal.BAD_PROOF


def test_garbage_is_refused_at_its_first_wrong_byte() -> None:
    # What an unauthenticated peer of the old protocol sends first: a msgpack array.
    host = Handshake(SECRET, Role.HOST)
    assert refusal_of(host, b"\x92") is Refusal.NOT_A_STREAM  # one byte is enough
    host = Handshake(SECRET, Role.HOST)
    assert refusal_of(host, MAGIC + bytes([HANDSHAKE_VERSION + 1])) is Refusal.VERSION
    host = Handshake(SECRET, Role.HOST)
    assert refusal_of(host, MAGIC + bytes([HANDSHAKE_VERSION]) + b"X") is Refusal.ROLE


def test_bytes_after_the_proof_before_the_answer_are_refused() -> None:
    gateway, host = Handshake(SECRET, Role.GATEWAY), Handshake(SECRET, Role.HOST)
    host.receive_data(gateway.data_to_send())
    gateway.receive_data(host.data_to_send())
    proof = gateway.data_to_send()
    assert refusal_of(host, proof + b"\x93") is Refusal.TOO_MUCH
    assert host.data_to_send() == b""


def test_a_refusal_is_final() -> None:
    host = Handshake(SECRET, Role.HOST)
    refusal_of(host, b"nope")
    gateway = Handshake(SECRET, Role.GATEWAY)
    assert refusal_of(host, gateway.data_to_send()) is Refusal.NOT_A_STREAM
    assert host.bytes_expected == 0


def test_a_short_secret_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Handshake(b"short", Role.HOST)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=4 * HANDSHAKE_BYTES), cuts=st.lists(st.integers(0, 300)))
def test_fuzz_whatever_a_stranger_sends_is_refused_or_waited_on_never_a_crash(
    data: bytes, cuts: list[int]
) -> None:
    host = Handshake(SECRET, Role.HOST)
    host.data_to_send()
    chunks = [
        data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
    ]
    for chunk in chunks:
        try:
            host.receive_data(chunk)
        except HandshakeRefused:
            break
    # Without the secret nobody gets in; the host never proved anything to them,
    # and it never took more than one opening and one proof.
    assert not host.established
    assert host.data_to_send() == b""
    assert host.received <= HANDSHAKE_BYTES
    assert host.refused is not None or host.bytes_expected > 0  # refused, or still waiting


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, HANDSHAKE_BYTES - 1),
    flip=st.integers(1, 255),
    cuts=st.lists(st.integers(0, HANDSHAKE_BYTES)),
)
def test_fuzz_any_altered_byte_of_a_real_gateway_handshake_is_refused(
    position: int, flip: int, cuts: list[int]
) -> None:
    gateway, host = Handshake(SECRET, Role.GATEWAY), Handshake(SECRET, Role.HOST)
    sent = gateway.data_to_send()
    gateway.receive_data(host.data_to_send())
    sent += gateway.data_to_send()
    altered = bytearray(sent)
    altered[position] ^= flip
    points = sorted(cuts)
    chunks = [
        bytes(altered[a:b]) for a, b in zip([0, *points], [*points, len(altered)], strict=True)
    ]
    with pytest.raises(HandshakeRefused):
        for chunk in chunks:
            host.receive_data(chunk)
    assert not host.established and host.data_to_send() == b""


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, HANDSHAKE_BYTES)))
def test_fuzz_a_real_handshake_passes_however_it_is_fragmented(cuts: list[int]) -> None:
    gateway, host = Handshake(SECRET, Role.GATEWAY), Handshake(SECRET, Role.HOST)
    to_host = gateway.data_to_send()
    gateway.receive_data(host.data_to_send())
    to_host += gateway.data_to_send()
    points = sorted(cuts)
    for a, b in zip([0, *points], [*points, len(to_host)], strict=True):
        host.receive_data(to_host[a:b])
    assert host.established
    gateway.receive_data(host.data_to_send())
    assert gateway.established


# -- secrets -------------------------------------------------------------------


def test_a_configured_secret_is_read_as_hex_or_base64() -> None:
    secret = new_cluster_secret()
    assert len(secret) == 32 and secret != new_cluster_secret()
    assert parse_cluster_secret(secret.hex()) == secret
    assert parse_cluster_secret(f"  {secret.hex().upper()}\n") == secret
    assert parse_cluster_secret(base64.b64encode(secret).decode()) == secret
    unpadded = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    assert parse_cluster_secret(unpadded) == secret
    with pytest.raises(ValueError, match="at least 32"):
        parse_cluster_secret(secret[:16].hex())
    with pytest.raises(ValueError, match="hexadecimal or base64"):
        parse_cluster_secret("not a secret!")


# -- the refusal log -------------------------------------------------------------


def test_refusals_are_logged_once_per_address_per_interval_with_a_count() -> None:
    refusals = RefusalLog(interval_seconds=60.0, max_lines=100)
    first = refusals.refused("10.0.0.9", Refusal.BAD_PROOF, now=0.0)
    assert first is not None and "10.0.0.9" in first
    assert all(refusals.refused("10.0.0.9", Refusal.BAD_PROOF, now=t) is None for t in range(1, 50))
    assert refusals.refused("10.0.0.8", Refusal.TIMEOUT, now=50.0) is not None  # another address
    later = refusals.refused("10.0.0.9", Refusal.NOT_A_STREAM, now=61.0)
    assert later is not None and "49 more" in later


def test_many_addresses_share_a_bounded_number_of_lines() -> None:
    refusals = RefusalLog(interval_seconds=60.0, max_lines=5, max_addresses=3)
    lines = [
        refusals.refused(f"127.0.{i // 250}.{i % 250}", Refusal.BAD_PROOF, 1.0) for i in range(500)
    ]
    assert sum(line is not None for line in lines) == 5
    next_window = refusals.refused("127.9.9.9", Refusal.BAD_PROOF, now=70.0)
    assert next_window is not None and "495 refusals elsewhere" in next_window
    assert len(refusals._last) <= 3  # the memory of addresses is bounded too


# -- the glue, on loopback sockets ----------------------------------------------------


@contextlib.asynccontextmanager
async def guarded_server(guard: StreamGuard) -> AsyncIterator[tuple[str, int, list[bytes]]]:
    """A server that admits through ``guard`` and records what admitted peers send."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await guard.admit(reader, writer):
            received.append(await reader.read(1024))
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the peer closed the connection (EOF or reset) within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(1024):
                pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


async def test_a_dialler_with_the_secret_gets_a_link_and_one_without_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = StreamGuard(SECRET, timeout=5.0)
    async with guarded_server(guard) as (host, port, received):
        link = await open_stream(host, port, secret=SECRET)
        link.send(Hello(PROTOCOL_VERSION, "gateway"))
        assert await asyncio.wait_for(link.read_batches(), 5.0) is None  # the server closes
        first = [encode(Hello(PROTOCOL_VERSION, "gateway"))]
        assert [msgpack.unpackb(data) for data in received] == first
        with caplog.at_level(logging.WARNING, logger="boardcast.stream"):
            for _ in range(3):
                with pytest.raises(HandshakeRefused):
                    await open_stream(host, port, secret=OTHER_SECRET)
        assert len(received) == 1
        assert guard.refused == 3 and guard.pending == 0
        # Three refusals from one address: one log line.
        lines = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1 and "127.0.0.1" in lines[0].getMessage()


async def test_a_silent_or_trickling_peer_is_dropped_at_the_deadline() -> None:
    guard = StreamGuard(SECRET, timeout=0.3)
    async with guarded_server(guard) as (host, port, received):
        reader, writer = await asyncio.open_connection(host, port)
        assert await closed_by_peer(reader, 10.0)  # sent nothing: dropped
        reader, writer = await asyncio.open_connection(host, port)
        honest_start = Handshake(SECRET, Role.GATEWAY).data_to_send()
        dropped = False
        for byte in honest_start:  # a valid opening, one byte at a time, too slowly
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                dropped = True
                break
            if await closed_by_peer(reader, 0.1):
                dropped = True
                break
        if not dropped:  # the whole opening went out first: still no proof, so dropped
            dropped = await closed_by_peer(reader, 10.0)
        assert dropped
        assert received == [] and guard.pending == 0 and guard.refused == 2


async def test_a_host_without_the_secret_is_not_sent_a_frame() -> None:
    # The gateway checks the host's proof before it returns a link to send on.
    impostor_saw: list[bytes] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(opening(Role.HOST))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readexactly(HANDSHAKE_BYTES)  # the gateway's opening and proof
            writer.write(bytes(PROOF_BYTES))  # a proof it cannot make
            impostor_saw.append(await reader.read(1024))
        writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeRefused):
            await open_stream("127.0.0.1", port, secret=SECRET)
    finally:
        server.close()
        await server.wait_closed()
    assert impostor_saw in ([b""], [])  # nothing past the gateway's proof, then the close


async def test_past_the_bound_on_pending_handshakes_new_peers_are_dropped_at_once() -> None:
    guard = StreamGuard(SECRET, timeout=30.0, max_pending=2)
    async with guarded_server(guard) as (host, port, _):
        held = [await asyncio.open_connection(host, port) for _ in range(2)]
        await wait_until(lambda: guard.pending == 2, message="two handshakes pending")
        reader, _ = await asyncio.open_connection(host, port)
        assert await closed_by_peer(reader, 10.0)
        for _, writer in held:
            writer.close()
        await wait_until(lambda: guard.pending == 0, message="the closed ones dropped")
        link = await open_stream(host, port, secret=SECRET)  # room again
        await link.close()


def test_the_handshake_is_small_and_fixed() -> None:
    assert OPENING_BYTES == 38 and HANDSHAKE_BYTES == 70
