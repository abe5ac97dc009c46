"""The account store on MongoDB, for gateways on several machines.

The same methods and answers as :class:`auth.accounts.AccountStore`, kept in ``accounts_*``
collections of the database the store URL names (``boardcast`` if it names none)::

    accounts_users            _id: user id; name, name_folded (unique), external (unique, sparse)
    accounts_families         _id: family id; user, created, last_used, revoked, amr
    accounts_refresh_tokens   _id: SHA-256 of the token; family, issued, rotated, expires
    accounts_api_tokens       _id: token id (the JWT's jti); user, scope, created, ...
    accounts_codes            _id: SHA-256 of the code; kind, user, subject, expires, used
    accounts_signing_keys     _id: kid; private_key (sealed), created, retired
    accounts_revocations      _id: seq; at, user, kind
    accounts_audit            _id: seq; at, kind, user, detail (JSON)
    accounts_counters         _id: "revocations" or "audit"; seq

Where SQLite takes a write lock for a check and its write, this store makes the check part of
the write's filter (``find_one_and_update`` on ``rotated: None``, ``used: None``...), so two
gateways racing on one refresh token, code or TOTP step cannot both win. Sequence numbers come
from a counter document raised with ``$inc``. The calls are synchronous (``pymongo``): the
gateway already runs every account call in a thread.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from auth.accounts import (
    MAX_NAME_CHARS,
    AccountError,
    ApiToken,
    AuditEntry,
    Family,
    FieldCipher,
    PlainFields,
    RefreshRecord,
    Revocation,
    User,
)

#: The database used when the URL names none (as for the board store).
DEFAULT_DATABASE = "boardcast"

#: Every collection of this store starts so, beside the board store's collections.
PREFIX = "accounts_"

Document = dict[str, Any]

# SQLite's NOCASE folds ASCII letters only; the unique name key folds the same way, so a
# name that is taken on one store is taken on the other.
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_name(name: str) -> str:
    """The key a user name is unique under (ASCII letters lower-cased, as SQLite's NOCASE)."""
    return name.translate(_ASCII_FOLD)


@dataclass(frozen=True, slots=True)
class MongoAccountsSettings:
    """Bounds of the MongoDB account store (defaults suit one data centre).

    Attributes:
        server_selection_timeout_seconds: how long a call waits for a reachable server.
        connect_timeout_seconds: how long opening a connection may take.
        socket_timeout_seconds: how long a call waits for a reply, so none hangs forever.
        feed_gap_seconds: how long a reader of the revocation feed waits for a missing
            sequence number (taken by a writer that has not inserted its entry yet) before
            it reads past it; a writer that died between the two leaves such a gap.
    """

    server_selection_timeout_seconds: float = 5.0
    connect_timeout_seconds: float = 5.0
    socket_timeout_seconds: float = 20.0
    feed_gap_seconds: float = 5.0


class MongoAccountStore:
    """The accounts of every gateway that names one MongoDB store URL."""

    def __init__(
        self,
        url: str,
        *,
        cipher: FieldCipher | None = None,
        settings: MongoAccountsSettings | None = None,
    ) -> None:
        self.url = url
        self.settings = settings or MongoAccountsSettings()
        self._cipher: FieldCipher = cipher if cipher is not None else PlainFields()
        options: dict[str, Any] = {}
        in_url = url.lower()
        for name, seconds in (
            ("serverSelectionTimeoutMS", self.settings.server_selection_timeout_seconds),
            ("connectTimeoutMS", self.settings.connect_timeout_seconds),
            ("socketTimeoutMS", self.settings.socket_timeout_seconds),
        ):
            if name.lower() not in in_url:
                options[name] = int(seconds * 1000)
        self._client: MongoClient[Document] = MongoClient(url, **options)
        self.database_name = self._client.get_default_database(DEFAULT_DATABASE).name
        hello: Document = self._client.admin.command("hello")
        replicated = "setName" in hello or hello.get("msg") == "isdbgrid"
        concern = WriteConcern(w="majority" if replicated else 1, j=True)
        database = self._client.get_database(self.database_name, write_concern=concern)
        self._users: Collection[Document] = database[PREFIX + "users"]
        self._families: Collection[Document] = database[PREFIX + "families"]
        self._refresh: Collection[Document] = database[PREFIX + "refresh_tokens"]
        self._api_tokens: Collection[Document] = database[PREFIX + "api_tokens"]
        self._codes: Collection[Document] = database[PREFIX + "codes"]
        self._keys: Collection[Document] = database[PREFIX + "signing_keys"]
        self._revocations: Collection[Document] = database[PREFIX + "revocations"]
        self._audit: Collection[Document] = database[PREFIX + "audit"]
        self._counters: Collection[Document] = database[PREFIX + "counters"]
        self._create_indexes()

    def _create_indexes(self) -> None:
        # Token hashes, ids and kids are each collection's _id, unique by nature.
        self._users.create_index([("name_folded", ASCENDING)], unique=True)
        # Only users linked to an external identity carry the key; sparse lets the rest be.
        self._users.create_index([("external", ASCENDING)], unique=True, sparse=True)
        self._families.create_index([("user", ASCENDING)])
        self._refresh.create_index([("family", ASCENDING)])
        self._codes.create_index([("expires", ASCENDING)])
        self._keys.create_index([("created", ASCENDING)])

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

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
        document: Document = {
            "_id": user_id,
            "name": name,
            "name_folded": fold_name(name),
            "email": self._seal(email, b"user-email:" + user_id.encode()),
            "password": password_hash,
            "admin": admin,
            "disabled": False,
            "totp": None,
            "totp_last_step": 0,
            "created": time.time(),
        }
        if external is not None:
            issuer, subject = external
            document.update(
                external=_external_key(issuer, subject),
                external_issuer=issuer,
                external_subject=subject,
            )
        try:
            self._users.insert_one(document)
        except DuplicateKeyError:
            raise AccountError(f"the user name {name!r} is taken") from None
        return self._user(document)

    def get_user(self, user_id: str) -> User | None:
        """The user with this id."""
        return self._one_user({"_id": _key(user_id)})

    def find_user(self, name: str) -> User | None:
        """The user with this name (case-insensitive)."""
        return self._one_user({"name_folded": fold_name(_key(name))})

    def find_external(self, issuer: str, subject: str) -> User | None:
        """The user linked to an external identity."""
        return self._one_user({"external": _external_key(_key(issuer), _key(subject))})

    def users(self) -> list[User]:
        """Every user, by name."""
        return [self._user(found) for found in self._users.find().sort("name_folded", ASCENDING)]

    def count_users(self) -> int:
        """How many accounts exist."""
        return int(self._users.count_documents({}))

    def set_password(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash."""
        self._users.update_one({"_id": user_id}, {"$set": {"password": password_hash}})

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable an account (a disabled one cannot log in or use any token)."""
        self._users.update_one({"_id": user_id}, {"$set": {"disabled": disabled}})

    def set_admin(self, user_id: str, admin: bool) -> None:
        """Make a user a server administrator, or not."""
        self._users.update_one({"_id": user_id}, {"$set": {"admin": admin}})

    def set_totp(self, user_id: str, secret: str | None) -> None:
        """Enrol (or remove) a TOTP secret."""
        blob = self._seal(secret, b"user-totp:" + user_id.encode())
        self._users.update_one({"_id": user_id}, {"$set": {"totp": blob, "totp_last_step": 0}})

    def use_totp_step(self, user_id: str, step: int) -> bool:
        """Record a used TOTP step; False if that step (or a later one) was used already."""
        # The comparison is in the filter: of two gateways checking one code, one matches.
        result = self._users.update_one(
            {"_id": user_id, "totp_last_step": {"$lt": step}}, {"$set": {"totp_last_step": step}}
        )
        return result.modified_count == 1

    def _one_user(self, query: Document) -> User | None:
        found = self._users.find_one(query)
        return self._user(found) if found is not None else None

    def _user(self, found: Document) -> User:
        user_id = str(found["_id"])
        return User(
            id=user_id,
            name=str(found["name"]),
            email=self._open(found.get("email"), b"user-email:" + user_id.encode()),
            admin=bool(found.get("admin")),
            disabled=bool(found.get("disabled")),
            password_hash=found.get("password"),
            totp_secret=self._open(found.get("totp"), b"user-totp:" + user_id.encode()),
            totp_last_step=int(found.get("totp_last_step", 0)),
            created_at=float(found["created"]),
        )

    def _seal(self, value: str | None, context: bytes) -> bytes | None:
        return None if value is None else self._cipher.encrypt(value.encode(), context=context)

    def _open(self, blob: bytes | None, context: bytes) -> str | None:
        return None if blob is None else self._cipher.decrypt(bytes(blob), context=context).decode()

    # -- refresh families -----------------------------------------------------------

    def add_family(self, family_id: str, user_id: str, amr: tuple[str, ...]) -> None:
        """Start a login's refresh family."""
        now = time.time()
        self._families.insert_one(
            {
                "_id": family_id,
                "user": user_id,
                "created": now,
                "last_used": now,
                "revoked": None,
                "amr": list(amr),
            }
        )

    def get_family(self, family_id: str) -> Family | None:
        """A refresh family by id."""
        found = self._families.find_one({"_id": _key(family_id)})
        if found is None:
            return None
        return Family(
            str(found["_id"]),
            str(found["user"]),
            float(found["created"]),
            float(found["last_used"]),
            found.get("revoked"),
            tuple(found.get("amr", ())),
        )

    def revoke_family(self, family_id: str, kind: str) -> str | None:
        """Revoke a family and announce it on the feed; its user, or None if none such."""
        now = time.time()
        # Only the call that flips revoked from None announces: a logout seen twice says so once.
        flipped = self._families.find_one_and_update(
            {"_id": _key(family_id), "revoked": None}, {"$set": {"revoked": now}}
        )
        if flipped is not None:
            user = str(flipped["user"])
            self._announce(user, kind, now)
            return user
        found = self._families.find_one({"_id": family_id}, {"user": 1})
        return None if found is None else str(found["user"])

    def revoke_sessions(self, user_id: str, kind: str, *, keep: str | None = None) -> None:
        """Revoke every family of a user (but ``keep``, the caller's own), and announce it."""
        now = time.time()
        self._families.update_many(
            {"user": user_id, "revoked": None, "_id": {"$ne": keep or ""}},
            {"$set": {"revoked": now}},
        )
        self._announce(user_id, kind, now)

    def add_refresh(self, digest: str, family_id: str, expires_at: float) -> None:
        """Record a refresh token of a family, by hash."""
        now = time.time()
        self._refresh.insert_one(
            {
                "_id": digest,
                "family": family_id,
                "issued": now,
                "rotated": None,
                "expires": expires_at,
            }
        )
        self._families.update_one({"_id": family_id}, {"$set": {"last_used": now}})

    def family_of_refresh(self, digest: str) -> str | None:
        """The family a refresh token (by hash) belongs to."""
        found = self._refresh.find_one({"_id": _key(digest)}, {"family": 1})
        return None if found is None else str(found["family"])

    def rotate_refresh(
        self, digest: str, successor: str, *, expires_at: float, grace_seconds: float
    ) -> tuple[str, RefreshRecord | None]:
        """Spend a refresh token and record its successor, atomically.

        Returns ``("ok", record)`` when the token was unused (or used within the grace
        window, for two tabs refreshing at once), ``("reused", record)`` when it had been
        spent before the window (the caller revokes the family), ``("unknown", None)``.
        """
        now = time.time()
        # The spend is one document update filtered on "not spent yet": of any number of
        # concurrent callers exactly one gets the document back as it was before.
        spent = self._refresh.find_one_and_update(
            {"_id": _key(digest), "rotated": None},
            {"$set": {"rotated": now}},
            return_document=ReturnDocument.BEFORE,
        )
        if spent is None:
            found = self._refresh.find_one({"_id": digest})
            if found is None:
                return "unknown", None
            record = _refresh_record(found)
            if record.rotated_at is not None and now - record.rotated_at > grace_seconds:
                return "reused", record
        else:
            record = _refresh_record(spent)
        self._refresh.insert_one(
            {
                "_id": successor,
                "family": record.family_id,
                "issued": now,
                "rotated": None,
                "expires": expires_at,
            }
        )
        self._families.update_one({"_id": record.family_id}, {"$set": {"last_used": now}})
        return "ok", record

    # -- API tokens -------------------------------------------------------------------

    def add_api_token(self, token: ApiToken) -> None:
        """Record a scoped token (its id is the JWT's ``jti``)."""
        self._api_tokens.insert_one(
            {
                "_id": token.id,
                "user": token.user_id,
                "scope": json.dumps(token.scope),
                "created": token.created_at,
                "expires": token.expires_at,
                "revoked": None,
                "label": token.label,
            }
        )

    def get_api_token(self, token_id: str) -> ApiToken | None:
        """A scoped token by id."""
        found = self._api_tokens.find_one({"_id": _key(token_id)})
        if found is None:
            return None
        return ApiToken(
            str(found["_id"]),
            str(found["user"]),
            json.loads(found["scope"]),
            float(found["created"]),
            found.get("expires"),
            found.get("revoked"),
            str(found.get("label", "")),
        )

    def revoke_api_token(self, token_id: str) -> str | None:
        """Revoke a scoped token and announce it; its user, or None if there is no such token."""
        now = time.time()
        flipped = self._api_tokens.find_one_and_update(
            {"_id": _key(token_id), "revoked": None}, {"$set": {"revoked": now}}
        )
        if flipped is None:
            return None
        user = str(flipped["user"])
        self._announce(user, "token-revoked", now)
        return user

    # -- single-use codes: WebSocket tickets, one-time login links ------------------------

    def add_code(self, digest: str, kind: str, user_id: str, subject: str, ttl: float) -> None:
        """Record a single-use code (by hash) that expires after ``ttl`` seconds."""
        now = time.time()
        self._codes.delete_many({"expires": {"$lt": now - 3600}})
        self._codes.insert_one(
            {
                "_id": digest,
                "kind": kind,
                "user": user_id,
                "subject": subject,
                "expires": now + ttl,
                "used": None,
            }
        )

    def use_code(self, digest: str, kind: str) -> tuple[str, str] | None:
        """Spend a code: its (user, subject), or None if unknown, expired or spent."""
        now = time.time()
        spent = self._codes.find_one_and_update(
            {"_id": _key(digest), "kind": _key(kind), "used": None, "expires": {"$gte": now}},
            {"$set": {"used": now}},
        )
        if spent is None:
            return None
        return str(spent["user"]), str(spent["subject"])

    # -- signing keys ---------------------------------------------------------------------

    def add_signing_key(self, kid: str, private_pem: bytes) -> None:
        """Store a new signing key; it becomes the newest."""
        blob = self._cipher.encrypt(private_pem, context=b"signing-key:" + kid.encode())
        self._keys.insert_one(
            {"_id": kid, "private_key": blob, "created": time.time(), "retired": None}
        )

    def signing_keys(self) -> list[tuple[str, bytes, float, float | None]]:
        """Every signing key, oldest first: (kid, private PEM, created, retired)."""
        keys = []
        for found in self._keys.find().sort("created", ASCENDING):
            kid = str(found["_id"])
            pem = self._cipher.decrypt(
                bytes(found["private_key"]), context=b"signing-key:" + kid.encode()
            )
            keys.append((kid, pem, float(found["created"]), found.get("retired")))
        return keys

    def retire_signing_key(self, kid: str) -> None:
        """Stop accepting tokens signed with ``kid``."""
        self._keys.update_one({"_id": kid}, {"$set": {"retired": time.time()}})

    # -- the revocation feed and the audit log -----------------------------------------------

    def _next_seq(self, counter: str) -> int:
        for attempt in range(2):
            try:
                raised = self._counters.find_one_and_update(
                    {"_id": counter},
                    {"$inc": {"seq": 1}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                # Two first writers both tried to create the counter; the loser's retry
                # finds it and raises it.
                if attempt:
                    raise
                continue
            if raised is not None:
                return int(raised["seq"])
        raise RuntimeError(f"the {counter} counter could not be raised")

    def _announce(self, user_id: str, kind: str, at: float) -> None:
        seq = self._next_seq("revocations")
        self._revocations.insert_one({"_id": seq, "at": at, "user": user_id, "kind": kind})

    def announce(self, user_id: str, kind: str) -> None:
        """Tell every gateway to check ``user_id``'s open sessions again (a role changed...)."""
        self._announce(user_id, kind, time.time())

    def revocations_after(self, seq: int, limit: int = 1000) -> list[Revocation]:
        """Feed entries after ``seq``, oldest first.

        A number is taken before its entry is inserted, so a reader may briefly see a later
        entry without an earlier one; the answer stops before such a gap (a poller would
        otherwise step past the missing entry for good) unless the gap has lasted
        ``feed_gap_seconds``, the sign of a writer that died between the two steps.
        """
        if limit <= 0:
            return []
        now = time.time()
        entries: list[Revocation] = []
        expected = seq + 1
        found = self._revocations.find({"_id": {"$gt": seq}}).sort("_id", ASCENDING).limit(limit)
        for document in found:
            entry = Revocation(
                int(document["_id"]),
                float(document["at"]),
                str(document["user"]),
                str(document["kind"]),
            )
            if entry.seq != expected and now - entry.at < self.settings.feed_gap_seconds:
                break
            entries.append(entry)
            expected = entry.seq + 1
        return entries

    def last_revocation(self) -> int:
        """The feed's newest sequence number (0 if empty)."""
        newest = self._revocations.find_one({}, sort=[("_id", DESCENDING)])
        return 0 if newest is None else int(newest["_id"])

    def audit(self, kind: str, user_id: str | None, **detail: Any) -> None:
        """Record a security event."""
        seq = self._next_seq("audit")
        self._audit.insert_one(
            {
                "_id": seq,
                "at": time.time(),
                "kind": kind,
                "user": user_id,
                "detail": json.dumps(detail, default=str),
            }
        )

    def audit_log(self, *, before: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Security events, newest first."""
        if limit <= 0:
            return []
        query = {"_id": {"$lt": before if before is not None else 2**62}}
        found = self._audit.find(query).sort("_id", DESCENDING).limit(limit)
        return [
            AuditEntry(
                int(document["_id"]),
                float(document["at"]),
                str(document["kind"]),
                document.get("user"),
                json.loads(document["detail"]),
            )
            for document in found
        ]


def _key(value: str) -> str:
    # Lookups take strings only: a dict such as {"$ne": ""} reaching a filter would be a
    # query operator, not a value.
    if not isinstance(value, str):
        raise TypeError(f"an account key is a string, not {type(value).__name__}")
    return value


def _external_key(issuer: str, subject: str) -> str:
    # One string field, so a sparse unique index covers exactly the linked users.
    return json.dumps([issuer, subject])


def _refresh_record(found: Document) -> RefreshRecord:
    return RefreshRecord(
        str(found["family"]),
        float(found["issued"]),
        found.get("rotated"),
        float(found["expires"]),
    )
