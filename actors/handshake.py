"""Peer authentication of a frame stream: a mutual challenge-response, without I/O.

Before the first frame of a gateway-host link, each side proves that it knows
the cluster secret, without sending the secret. Both sides speak at once::

    opening = MAGIC "BCSH" | version (1 byte) | role (1 byte, G or H) | nonce (32 bytes)
    proof   = HMAC-SHA256(secret, LABEL | version | role | gateway nonce | host nonce)

Each side sends its opening as soon as the connection is up. The gateway sends
its proof once it has the host's opening; the host checks it and only then
answers with its own proof, so the host never computes a proof for a peer that
has not proved itself first. The gateway checks the host's proof before it
sends a frame. Each proof covers both fresh nonces, the prover's role and the
version, so a proof recorded on one link, or reflected back to its sender, is
worth nothing. Nothing may follow a proof until the other side has answered:
the frame stream starts after the handshake, and a peer gets at most
:data:`HANDSHAKE_BYTES` bytes in before it is judged.

:class:`Handshake` is the state machine (bytes in, bytes and a decision out);
:mod:`actors.stream` runs it on sockets, with a deadline.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets

#: The first bytes of every Boardcast frame stream (no msgpack array starts with them).
MAGIC = b"BCSH"
#: The handshake this code speaks; a peer with another version is refused.
HANDSHAKE_VERSION = 1
NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
#: The shortest cluster secret accepted, in bytes.
MIN_SECRET_BYTES = 32
OPENING_BYTES = len(MAGIC) + 2 + NONCE_BYTES
#: Everything one side sends before it is authenticated: its opening and its proof.
HANDSHAKE_BYTES = OPENING_BYTES + PROOF_BYTES
# Domain separation: these proofs mean nothing to any other use of the same secret.
_LABEL = b"boardcast frame stream proof\x00"


class Role(enum.Enum):
    """Which end of a link a side is: the gateway dials, the host accepts."""

    GATEWAY = b"G"
    HOST = b"H"

    @property
    def peer(self) -> Role:
        """The role expected at the other end."""
        return Role.HOST if self is Role.GATEWAY else Role.GATEWAY


class Refusal(enum.Enum):
    """Why a handshake failed; the value is the line logged."""

    NOT_A_STREAM = "did not open with the Boardcast stream handshake"
    VERSION = "speaks another handshake version"
    ROLE = "claimed the wrong role"
    REFLECTED = "sent this side's own nonce back"
    BAD_PROOF = "could not prove knowledge of the cluster secret"
    TOO_MUCH = "sent more than the handshake before it was answered"
    CLOSED = "closed the connection during the handshake"
    TIMEOUT = "did not finish the handshake in time"
    BUSY = "arrived while too many handshakes were pending"


class HandshakeRefused(ConnectionError):
    """The peer of a new link did not authenticate; the link is dropped."""

    def __init__(self, refusal: Refusal, *, received: int = 0) -> None:
        super().__init__(f"peer {refusal.value}")
        self.refusal = refusal
        self.received = received  # bytes the peer had sent when it was refused


def new_cluster_secret() -> bytes:
    """Thirty-two random bytes, for a cluster started without a configured secret."""
    return secrets.token_bytes(MIN_SECRET_BYTES)


def parse_cluster_secret(text: str) -> bytes:
    """Decode a configured secret: hexadecimal, or base64 (standard or URL-safe).

    Raises:
        ValueError: the text is neither, or decodes to fewer than 32 bytes.
    """
    text = text.strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        padded = text + "=" * (-len(text) % 4)
        try:
            secret = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("cluster_secret: expected hexadecimal or base64") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"cluster_secret: {len(secret)} bytes, at least {MIN_SECRET_BYTES} needed")
    return secret


class Handshake:
    """One side of a link's handshake: feed it what arrives, send what it has to send.

    Usage: send :meth:`data_to_send` at once; then, until :attr:`established`,
    read at most :attr:`bytes_expected` bytes, pass them to :meth:`receive_data`
    and send :meth:`data_to_send` again. Any refusal raises
    :class:`HandshakeRefused` and is final.
    """

    def __init__(self, secret: bytes, role: Role, *, nonce: bytes | None = None) -> None:
        """Start a handshake as ``role``; ``nonce`` is for tests (default: fresh random)."""
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a cluster secret has at least {MIN_SECRET_BYTES} bytes")
        self.role = role
        self._secret = secret
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        if len(self._nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
        self._peer_nonce: bytes | None = None
        self._buffer = bytearray()
        self._out = bytearray(MAGIC + bytes([HANDSHAKE_VERSION]) + role.value + self._nonce)
        self.established = False
        self.refused: Refusal | None = None
        self.received = 0  # bytes taken from the peer so far

    @property
    def bytes_expected(self) -> int:
        """How many more bytes the handshake needs from the peer (0 once decided)."""
        if self.established or self.refused is not None:
            return 0
        if self._peer_nonce is None:
            return OPENING_BYTES - len(self._buffer)
        return PROOF_BYTES - len(self._buffer)

    def data_to_send(self) -> bytes:
        """Bytes for the peer, queued since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer, judging them as early as possible.

        Raises:
            HandshakeRefused: the peer is not an authenticated Boardcast peer.
        """
        if self.refused is not None:
            raise HandshakeRefused(self.refused, received=self.received)
        view = memoryview(data)
        while view:
            take = self.bytes_expected
            if take == 0:
                # A proof was followed by more bytes before this side answered it.
                self._refuse(Refusal.TOO_MUCH)
            chunk, view = view[:take], view[take:]
            self._buffer += chunk
            self.received += len(chunk)
            if self._peer_nonce is None:
                self._check_opening_prefix()
                if len(self._buffer) == OPENING_BYTES:
                    self._take_opening()
            elif len(self._buffer) == PROOF_BYTES:
                self._take_proof()

    def _check_opening_prefix(self) -> None:
        # Garbage is refused at its first wrong byte, not after a full opening.
        buffer = self._buffer
        magic = len(MAGIC)
        if bytes(buffer[:magic]) != MAGIC[: len(buffer)]:
            self._refuse(Refusal.NOT_A_STREAM)
        if len(buffer) > magic and buffer[magic] != HANDSHAKE_VERSION:
            self._refuse(Refusal.VERSION)
        if len(buffer) > magic + 1 and bytes(buffer[magic + 1 : magic + 2]) != self.role.peer.value:
            self._refuse(Refusal.ROLE)

    def _take_opening(self) -> None:
        nonce = bytes(self._buffer[OPENING_BYTES - NONCE_BYTES :])
        self._buffer.clear()
        if hmac.compare_digest(nonce, self._nonce):
            self._refuse(Refusal.REFLECTED)
        self._peer_nonce = nonce
        if self.role is Role.GATEWAY:
            self._out += self._proof(self.role)

    def _take_proof(self) -> None:
        proof = bytes(self._buffer)
        self._buffer.clear()
        if not hmac.compare_digest(proof, self._proof(self.role.peer)):
            self._refuse(Refusal.BAD_PROOF)
        if self.role is Role.HOST:
            self._out += self._proof(self.role)
        self.established = True

    def _proof(self, prover: Role) -> bytes:
        assert self._peer_nonce is not None
        if self.role is Role.GATEWAY:
            gateway_nonce, host_nonce = self._nonce, self._peer_nonce
        else:
            gateway_nonce, host_nonce = self._peer_nonce, self._nonce
        transcript = _LABEL + bytes([HANDSHAKE_VERSION]) + prover.value + gateway_nonce + host_nonce
        return hmac.new(self._secret, transcript, hashlib.sha256).digest()

    def _refuse(self, refusal: Refusal) -> None:
        self.refused = refusal
        self.established = False
        self._out.clear()
        self._buffer.clear()
        raise HandshakeRefused(refusal, received=self.received)


class RefusalLog:
    """Decides which refusals are worth a log line: one per address per interval, few in all.

    A peer that retries in a loop, or many addresses at once, must not turn the
    log into the attack: each address gets one line per ``interval_seconds``
    (with a count of what it did meanwhile), and all addresses together at most
    ``max_lines`` per interval; the rest is counted in the next line.
    """

    def __init__(
        self,
        *,
        interval_seconds: float = 60.0,
        max_lines: int = 20,
        max_addresses: int = 4096,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.max_lines = max_lines
        self.max_addresses = max_addresses
        self._last: dict[str, float] = {}  # address -> when its last line was logged
        self._quiet: dict[str, int] = {}  # address -> refusals not logged since
        self._window_start = float("-inf")
        self._lines_in_window = 0
        self._unlogged_elsewhere = 0

    def refused(self, address: str, refusal: Refusal, now: float) -> str | None:
        """Record a refusal of ``address`` at monotonic time ``now``; the line to log, if any.

        The line names the address and the reason, with counts of what went unlogged.
        """
        if now - self._window_start >= self.interval_seconds:
            self._window_start = now
            self._lines_in_window = 0
        last = self._last.get(address)
        if last is not None and now - last < self.interval_seconds:
            self._quiet[address] = self._quiet.get(address, 0) + 1
            return None
        if self._lines_in_window >= self.max_lines:
            self._unlogged_elsewhere += 1
            return None
        if len(self._last) >= self.max_addresses and address not in self._last:
            # Forget the address logged longest ago (dicts keep insertion order).
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._quiet.pop(oldest, None)
        self._last.pop(address, None)
        self._last[address] = now
        self._lines_in_window += 1
        line = f"{address}: peer {refusal.value}"
        quiet = self._quiet.pop(address, 0)
        if quiet:
            line += f" ({quiet} more from there since its last line)"
        if self._unlogged_elsewhere:
            line += f" ({self._unlogged_elsewhere} refusals elsewhere not logged)"
            self._unlogged_elsewhere = 0
        return line
