"""The account store: users, sessions, tokens, signing keys, the revocation feed, the audit log.

One SQLite file (``<data_dir>/accounts.sqlite3``) shared by every gateway and CLI
command on the data directory. Calls are synchronous and short (a local
SQLite read or write); the gateway runs them in a thread. Secrets are never
stored: refresh tokens, tickets and one-time links are kept as SHA-256 hashes,
and e-mail addresses, TOTP secrets and signing keys go through a
:class:`FieldCipher` (the at-rest key ring) before they touch the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from crdt.errors import BoardcastError

ACCOUNTS_FILENAME = "accounts.sqlite3"
MAX_NAME_CHARS = 64


class AccountError(BoardcastError):
    """An account operation that cannot be done (a duplicate name, an unknown user)."""


class FieldCipher(Protocol):
    """Encrypts personal and secret fields (see ``persistence/keyring.py``)."""

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes: ...

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes: ...


class PlainFields:
    """No encryption (``encryption`` off): fields are stored as they are."""

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        return plaintext

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        return blob


def token_hash(secret: str) -> str:
    """How a bearer secret (refresh token, ticket, link code) is looked up: its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class User:
    """A Boardcast account."""

    id: str
    name: str
    email: str | None
    admin: bool
    disabled: bool
    password_hash: str | None
    totp_secret: str | None
    totp_last_step: int
    created_at: float

    @property
    def mfa(self) -> bool:
        """Whether the user has a second factor enrolled."""
        return self.totp_secret is not None


@dataclass(frozen=True, slots=True)
class Family:
    """One login's chain of refresh tokens (RFC 9700 §4.14): revoked as a whole."""

    id: str
    user_id: str
    created_at: float
    last_used_at: float
    revoked_at: float | None
    amr: tuple[str, ...]  # how the login was made: ("pwd",), ("pwd", "otp"), ("oidc",), ...


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """A refresh token, by hash."""

    family_id: str
    issued_at: float
    rotated_at: float | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A scoped, long-lived token for automation, revocable by its id."""

    id: str
    user_id: str
    scope: dict[str, str]  # {"board": id, "role": r} or {"project": id, "role": r}
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    label: str


@dataclass(frozen=True, slots=True)
class Revocation:
    """An entry of the revocation feed: open sessions of ``user_id`` must be checked again."""

    seq: int
    at: float
    user_id: str
    kind: str  # "logout", "token-reuse", "role-changed", "disabled", "token-revoked", ...


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A security event, for administrators."""

    seq: int
    at: float
    kind: str
    user_id: str | None
    detail: dict[str, Any]


class Accounts(Protocol):
    """What :class:`AuthService` needs of an account store: SQLite here, or MongoDB
    (``auth/mongo_accounts.py``) for gateways on several machines."""

    def close(self) -> None: ...

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        password_hash: str | None,
        email: str | None = None,
        admin: bool = False,
        external: tuple[str, str] | None = None,
    ) -> User: ...

    def get_user(self, user_id: str) -> User | None: ...

    def find_user(self, name: str) -> User | None: ...

    def find_external(self, issuer: str, subject: str) -> User | None: ...

    def users(self) -> list[User]: ...

    def count_users(self) -> int: ...

    def set_password(self, user_id: str, password_hash: str) -> None: ...

    def set_disabled(self, user_id: str, disabled: bool) -> None: ...

    def set_admin(self, user_id: str, admin: bool) -> None: ...

    def set_totp(self, user_id: str, secret: str | None) -> None: ...

    def use_totp_step(self, user_id: str, step: int) -> bool: ...

    def add_family(self, family_id: str, user_id: str, amr: tuple[str, ...]) -> None: ...

    def get_family(self, family_id: str) -> Family | None: ...

    def revoke_family(self, family_id: str, kind: str) -> str | None: ...

    def revoke_sessions(self, user_id: str, kind: str, *, keep: str | None = None) -> None: ...

    def add_refresh(self, digest: str, family_id: str, expires_at: float) -> None: ...

    def family_of_refresh(self, digest: str) -> str | None: ...

    def rotate_refresh(
        self, digest: str, successor: str, *, expires_at: float, grace_seconds: float
    ) -> tuple[str, RefreshRecord | None]: ...

    def add_api_token(self, token: ApiToken) -> None: ...

    def get_api_token(self, token_id: str) -> ApiToken | None: ...

    def revoke_api_token(self, token_id: str) -> str | None: ...

    def add_code(self, digest: str, kind: str, user_id: str, subject: str, ttl: float) -> None: ...

    def use_code(self, digest: str, kind: str) -> tuple[str, str] | None: ...

    def add_signing_key(self, kid: str, private_pem: bytes) -> None: ...

    def signing_keys(self) -> list[tuple[str, bytes, float, float | None]]: ...

    def retire_signing_key(self, kid: str) -> None: ...

    def announce(self, user_id: str, kind: str) -> None: ...

    def revocations_after(self, seq: int, limit: int = 1000) -> list[Revocation]: ...

    def last_revocation(self) -> int: ...

    def audit(self, kind: str, user_id: str | None, **detail: Any) -> None: ...

    def audit_log(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE, email BLOB,
    password TEXT, admin INTEGER NOT NULL DEFAULT 0, disabled INTEGER NOT NULL DEFAULT 0,
    totp BLOB, totp_last_step INTEGER NOT NULL DEFAULT 0,
    external_issuer TEXT, external_subject TEXT, created REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS users_external ON users (external_issuer, external_subject)
    WHERE external_issuer IS NOT NULL;
CREATE TABLE IF NOT EXISTS families (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL,
    revoked REAL, amr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS families_user ON families (user);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash TEXT PRIMARY KEY, family TEXT NOT NULL, issued REAL NOT NULL, rotated REAL,
    expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS refresh_family ON refresh_tokens (family);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, scope TEXT NOT NULL, created REAL NOT NULL,
    expires REAL, revoked REAL, label TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS bearer_codes (
    hash TEXT PRIMARY KEY, kind TEXT NOT NULL, user TEXT NOT NULL, subject TEXT NOT NULL,
    expires REAL NOT NULL, used REAL);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY, private_key BLOB NOT NULL, created REAL NOT NULL, retired REAL);
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user TEXT NOT NULL,
    kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL, user TEXT,
    detail TEXT NOT NULL);
"""


class AccountStore:
    """The accounts SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str, *, cipher: FieldCipher | None = None) -> None:
        self.path = path
        self._cipher: FieldCipher = cipher if cipher is not None else PlainFields()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        os.chmod(path, 0o600)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE: a rotation's check and its write are one step across processes.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # -- users -------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        password_hash: str | None,
        email: str | None = None,
        admin: bool = False,
        external: tuple[str, str] | None = None,
    ) -> User:
        """Create a user; :class:`AccountError` if the name is taken."""
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise AccountError(f"a user name has 1-{MAX_NAME_CHARS} printable characters")
        email_blob = self._seal(email, b"user-email:" + user_id.encode())
        issuer, subject = external if external is not None else (None, None)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO users (id, name, email, password, admin, external_issuer,"
                    " external_subject, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        user_id,
                        name,
                        email_blob,
                        password_hash,
                        int(admin),
                        issuer,
                        subject,
                        time.time(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise AccountError(f"the user name {name!r} is taken") from None
        user = self.get_user(user_id)
        assert user is not None
        return user

    def get_user(self, user_id: str) -> User | None:
        """The user with this id."""
        return self._one_user("id = ?", user_id)

    def find_user(self, name: str) -> User | None:
        """The user with this name (case-insensitive)."""
        return self._one_user("name = ?", name)

    def find_external(self, issuer: str, subject: str) -> User | None:
        """The user linked to an external identity."""
        return self._one_user("external_issuer = ? AND external_subject = ?", issuer, subject)

    def users(self) -> list[User]:
        """Every user, by name."""
        rows = self._rows(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")
        return [self._user(row) for row in rows]

    def count_users(self) -> int:
        """How many accounts exist."""
        return int(self._rows("SELECT COUNT(*) FROM users")[0][0])

    def set_password(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash."""
        with self._write() as db:
            db.execute("UPDATE users SET password = ? WHERE id = ?", (password_hash, user_id))

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account (a disabled one cannot log in or use any token)."""
        with self._write() as db:
            db.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))

    def set_admin(self, user_id: str, admin: bool) -> None:
        """Make a user a server administrator, or not."""
        with self._write() as db:
            db.execute("UPDATE users SET admin = ? WHERE id = ?", (int(admin), user_id))

    def set_totp(self, user_id: str, secret: str | None) -> None:
        """Enrol (or remove) a TOTP secret."""
        blob = self._seal(secret, b"user-totp:" + user_id.encode())
        with self._write() as db:
            db.execute(
                "UPDATE users SET totp = ?, totp_last_step = 0 WHERE id = ?", (blob, user_id)
            )

    def use_totp_step(self, user_id: str, step: int) -> bool:
        """Record a used TOTP step; False if that step (or a later one) was used already."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
                (step, user_id, step),
            ).rowcount
        return changed == 1

    def _one_user(self, where: str, *args: Any) -> User | None:
        rows = self._rows(f"SELECT {_USER_COLUMNS} FROM users WHERE {where}", *args)
        return self._user(rows[0]) if rows else None

    def _user(self, row: tuple[Any, ...]) -> User:
        user_id = row[0]
        return User(
            id=user_id,
            name=row[1],
            email=self._open(row[2], b"user-email:" + user_id.encode()),
            admin=bool(row[3]),
            disabled=bool(row[4]),
            password_hash=row[5],
            totp_secret=self._open(row[6], b"user-totp:" + user_id.encode()),
            totp_last_step=int(row[7]),
            created_at=float(row[8]),
        )

    def _seal(self, value: str | None, context: bytes) -> bytes | None:
        return None if value is None else self._cipher.encrypt(value.encode(), context=context)

    def _open(self, blob: bytes | None, context: bytes) -> str | None:
        return None if blob is None else self._cipher.decrypt(bytes(blob), context=context).decode()

    # -- refresh families -----------------------------------------------------------

    def add_family(self, family_id: str, user_id: str, amr: tuple[str, ...]) -> None:
        """Start a login's refresh family."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO families (id, user, created, last_used, amr) VALUES (?, ?, ?, ?, ?)",
                (family_id, user_id, now, now, json.dumps(list(amr))),
            )

    def get_family(self, family_id: str) -> Family | None:
        """A refresh family by id."""
        rows = self._rows(
            "SELECT id, user, created, last_used, revoked, amr FROM families WHERE id = ?",
            family_id,
        )
        if not rows:
            return None
        fid, user, created, last_used, revoked, amr = rows[0]
        return Family(fid, user, created, last_used, revoked, tuple(json.loads(amr)))

    def revoke_family(self, family_id: str, kind: str) -> str | None:
        """Revoke a family and announce it on the feed; its user, or None if none such."""
        with self._write() as db:
            rows = db.execute(
                "SELECT user, revoked FROM families WHERE id = ?", (family_id,)
            ).fetchall()
            if not rows:
                return None
            user, revoked = rows[0]
            if revoked is None:
                now = time.time()
                db.execute("UPDATE families SET revoked = ? WHERE id = ?", (now, family_id))
                db.execute(
                    "INSERT INTO revocations (at, user, kind) VALUES (?, ?, ?)", (now, user, kind)
                )
        return str(user)

    def revoke_sessions(self, user_id: str, kind: str, *, keep: str | None = None) -> None:
        """Revoke every family of a user (but ``keep``, the caller's own), and announce it."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE families SET revoked = ? WHERE user = ? AND revoked IS NULL AND id != ?",
                (now, user_id, keep or ""),
            )
            db.execute(
                "INSERT INTO revocations (at, user, kind) VALUES (?, ?, ?)", (now, user_id, kind)
            )

    def add_refresh(self, digest: str, family_id: str, expires_at: float) -> None:
        """Record a refresh token of a family, by hash."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO refresh_tokens (hash, family, issued, expires) VALUES (?, ?, ?, ?)",
                (digest, family_id, now, expires_at),
            )
            db.execute("UPDATE families SET last_used = ? WHERE id = ?", (now, family_id))

    def family_of_refresh(self, digest: str) -> str | None:
        """The family a refresh token (by hash) belongs to."""
        rows = self._rows("SELECT family FROM refresh_tokens WHERE hash = ?", digest)
        return str(rows[0][0]) if rows else None

    def rotate_refresh(
        self, digest: str, successor: str, *, expires_at: float, grace_seconds: float
    ) -> tuple[str, RefreshRecord | None]:
        """Spend a refresh token and record its successor, atomically.

        Returns ``("ok", record)`` when the token was unused (or used within the grace
        window, for two tabs refreshing at once), ``("reused", record)`` when it had been
        spent before the window (the caller revokes the family), ``("unknown", None)``.
        """
        now = time.time()
        with self._write() as db:
            rows = db.execute(
                "SELECT family, issued, rotated, expires FROM refresh_tokens WHERE hash = ?",
                (digest,),
            ).fetchall()
            if not rows:
                return "unknown", None
            record = RefreshRecord(*rows[0])
            if record.rotated_at is not None and now - record.rotated_at > grace_seconds:
                return "reused", record
            if record.rotated_at is None:
                db.execute("UPDATE refresh_tokens SET rotated = ? WHERE hash = ?", (now, digest))
            db.execute(
                "INSERT INTO refresh_tokens (hash, family, issued, expires) VALUES (?, ?, ?, ?)",
                (successor, record.family_id, now, expires_at),
            )
            db.execute("UPDATE families SET last_used = ? WHERE id = ?", (now, record.family_id))
        return "ok", record

    # -- API tokens -------------------------------------------------------------------

    def add_api_token(self, token: ApiToken) -> None:
        """Record a scoped token (its id is the JWT's ``jti``)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO api_tokens (id, user, scope, created, expires, label)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    token.id,
                    token.user_id,
                    json.dumps(token.scope),
                    token.created_at,
                    token.expires_at,
                    token.label,
                ),
            )

    def get_api_token(self, token_id: str) -> ApiToken | None:
        """A scoped token by id."""
        rows = self._rows(
            "SELECT id, user, scope, created, expires, revoked, label FROM api_tokens WHERE id = ?",
            token_id,
        )
        if not rows:
            return None
        tid, user, scope, created, expires, revoked, label = rows[0]
        return ApiToken(tid, user, json.loads(scope), created, expires, revoked, label)

    def revoke_api_token(self, token_id: str) -> str | None:
        """Revoke a scoped token and announce it; its user, or None if there is no such token."""
        with self._write() as db:
            rows = db.execute(
                "SELECT user FROM api_tokens WHERE id = ? AND revoked IS NULL", (token_id,)
            ).fetchall()
            if not rows:
                return None
            now = time.time()
            db.execute("UPDATE api_tokens SET revoked = ? WHERE id = ?", (now, token_id))
            db.execute(
                "INSERT INTO revocations (at, user, kind) VALUES (?, ?, 'token-revoked')",
                (now, rows[0][0]),
            )
        return str(rows[0][0])

    # -- single-use codes: WebSocket tickets, one-time login links ------------------------

    def add_code(self, digest: str, kind: str, user_id: str, subject: str, ttl: float) -> None:
        """Record a single-use code (by hash) that expires after ``ttl`` seconds."""
        now = time.time()
        with self._write() as db:
            db.execute("DELETE FROM bearer_codes WHERE expires < ?", (now - 3600,))
            db.execute(
                "INSERT INTO bearer_codes (hash, kind, user, subject, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (digest, kind, user_id, subject, now + ttl),
            )

    def use_code(self, digest: str, kind: str) -> tuple[str, str] | None:
        """Spend a code: its (user, subject), or None if unknown, expired or spent."""
        now = time.time()
        with self._write() as db:
            rows = db.execute(
                "SELECT user, subject FROM bearer_codes WHERE hash = ? AND kind = ?"
                " AND used IS NULL AND expires >= ?",
                (digest, kind, now),
            ).fetchall()
            if not rows:
                return None
            db.execute("UPDATE bearer_codes SET used = ? WHERE hash = ?", (now, digest))
        return str(rows[0][0]), str(rows[0][1])

    # -- signing keys ---------------------------------------------------------------------

    def add_signing_key(self, kid: str, private_pem: bytes) -> None:
        """Store a new signing key; it becomes the newest."""
        blob = self._cipher.encrypt(private_pem, context=b"signing-key:" + kid.encode())
        with self._write() as db:
            db.execute(
                "INSERT INTO signing_keys (kid, private_key, created) VALUES (?, ?, ?)",
                (kid, blob, time.time()),
            )

    def signing_keys(self) -> list[tuple[str, bytes, float, float | None]]:
        """Every signing key, oldest first: (kid, private PEM, created, retired)."""
        rows = self._rows(
            "SELECT kid, private_key, created, retired FROM signing_keys ORDER BY created"
        )
        return [
            (
                kid,
                self._cipher.decrypt(bytes(blob), context=b"signing-key:" + kid.encode()),
                created,
                retired,
            )
            for kid, blob, created, retired in rows
        ]

    def retire_signing_key(self, kid: str) -> None:
        """Stop accepting tokens signed with ``kid``."""
        with self._write() as db:
            db.execute("UPDATE signing_keys SET retired = ? WHERE kid = ?", (time.time(), kid))

    # -- the revocation feed and the audit log -----------------------------------------------

    def announce(self, user_id: str, kind: str) -> None:
        """Tell every gateway to check ``user_id``'s open sessions again (a role changed...)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO revocations (at, user, kind) VALUES (?, ?, ?)",
                (time.time(), user_id, kind),
            )

    def revocations_after(self, seq: int, limit: int = 1000) -> list[Revocation]:
        """Feed entries after ``seq``, oldest first."""
        rows = self._rows(
            "SELECT seq, at, user, kind FROM revocations WHERE seq > ? ORDER BY seq LIMIT ?",
            seq,
            limit,
        )
        return [Revocation(*row) for row in rows]

    def last_revocation(self) -> int:
        """The feed's newest sequence number (0 if empty)."""
        return int(self._rows("SELECT COALESCE(MAX(seq), 0) FROM revocations")[0][0])

    def audit(self, kind: str, user_id: str | None, **detail: Any) -> None:
        """Record a security event."""
        with self._write() as db:
            db.execute(
                "INSERT INTO audit (at, kind, user, detail) VALUES (?, ?, ?, ?)",
                (time.time(), kind, user_id, json.dumps(detail, default=str)),
            )

    def audit_log(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Security events, newest first."""
        rows = self._rows(
            "SELECT seq, at, kind, user, detail FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            before if before is not None else 2**62,
            limit,
        )
        return [
            AuditEntry(seq, at, kind, user, json.loads(detail))
            for seq, at, kind, user, detail in rows
        ]


_USER_COLUMNS = "id, name, email, admin, disabled, password, totp, totp_last_step, created"
