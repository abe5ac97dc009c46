"""Password hashing: argon2id, with the parameters recorded in every hash.

Hashing costs about 30 ms of CPU on purpose; callers on an event loop run it in a
thread (:func:`asyncio.to_thread`).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: Longest password accepted: argon2 hashes any length, but a megabyte "password" is an attack.
MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 10

# OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): about 30 ms here, so a login flood
# costs an attacker's requests, not the gateway's cores (logins are also rate limited).
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# Verified against when a user does not exist, so a login takes as long either way.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")


def check_new_password(password: str) -> str | None:
    """Why ``password`` may not be set, or None if it may."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password has at least {MIN_PASSWORD_CHARS} characters"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"a password has at most {MAX_PASSWORD_BYTES} bytes"
    return None


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (PHC string format)."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; a missing hash costs the same time."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(stored_hash)
