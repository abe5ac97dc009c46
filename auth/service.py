"""Logins, refresh-token rotation, tickets and scoped tokens, over the account store.

Everything here is synchronous (SQLite and argon2); the gateway calls it from a
thread. Refusals are :class:`AuthRefused` with a short ``reason`` that the HTTP
layer maps to a problem type and the WebSocket layer to a close code.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field

from auth import mfa
from auth.accounts import AccountError, Accounts, ApiToken, User, token_hash
from auth.passwords import check_new_password, hash_password, needs_rehash, verify_password
from auth.roles import Role
from auth.tokens import TokenClaims, TokenRefused, TokenSigner, new_key_id, new_private_key_pem
from crdt.errors import BoardcastError

#: The revocation feed's "user" for a change of the signing keys (no user id has a ``*``).
KEYS_CHANGED = "*keys"

#: The name every caller has when the server runs with ``--auth none``.
LOCAL_ADMIN = "local-admin"


class AuthRefused(BoardcastError):
    """A login, refresh or token that is refused; ``reason`` names why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Lifetimes and bounds of sessions and tokens (defaults in docs/settings.md)."""

    issuer: str = "boardcast"
    audience: str = "boardcast"
    access_ttl_seconds: float = 300.0  # an access token's life; refresh before it ends
    idle_seconds: float = 7 * 24 * 3600.0  # a login unused this long ends
    absolute_seconds: float = 30 * 24 * 3600.0  # a login ends this long after it began
    refresh_grace_seconds: float = 10.0  # a spent refresh token still works this long
    ticket_ttl_seconds: float = 30.0  # a WebSocket ticket's life (single use)
    login_link_ttl_seconds: float = 900.0  # the first-start login link's life (single use)
    mfa_fresh_seconds: float = 600.0  # a second factor counts for sensitive operations this long
    key_rotation_days: float = 30.0  # a signing key older than this is replaced at start
    max_api_token_days: float = 366.0  # longest life of a scoped token


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request or session is, once its credentials are checked."""

    user_id: str
    name: str
    admin: bool = False
    family: str | None = None  # the login it belongs to
    token_id: str | None = None
    expires_at: float | None = None  # when its credential ends (None: never)
    amr: tuple[str, ...] = ()
    auth_time: float = 0.0
    scope: dict[str, str] = field(default_factory=dict)  # scoped tokens: board/project, role
    mfa_enrolled: bool = False

    @property
    def scoped_role(self) -> Role | None:
        """The role a scoped token grants, if it is one."""
        role = self.scope.get("role")
        return Role.parse(role) if role else None


#: The principal of every caller with ``--auth none``.
LOCAL_PRINCIPAL = Principal(user_id=LOCAL_ADMIN, name=LOCAL_ADMIN, admin=True)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a successful login or refresh hands back."""

    user: User
    access_token: str
    expires_in: int
    refresh_token: str
    family: str


class AuthService:
    """Accounts and credentials of one data directory."""

    def __init__(self, store: Accounts, settings: AuthSettings | None = None) -> None:
        self.store = store
        self.settings = settings or AuthSettings()
        self.signer = TokenSigner(issuer=self.settings.issuer, audience=self.settings.audience)
        self._keys_loaded_at = 0.0

    # -- signing keys -----------------------------------------------------------------

    def ensure_signing_key(self) -> None:
        """Create the first signing key, or rotate one past its age; then load the keys."""
        keys = self.store.signing_keys()
        live = [key for key in keys if key[3] is None]
        age_limit = self.settings.key_rotation_days * 86400
        if not live or time.time() - live[-1][2] > age_limit:
            self.rotate_signing_key()
        else:
            self.reload_keys()

    def rotate_signing_key(self) -> str:
        """Start signing with a new key; keys two rotations old are retired.

        Tokens signed with the previous key keep working until they expire, so no
        one is logged out: they live minutes, rotations are days apart.
        """
        kid = new_key_id()
        self.store.add_signing_key(kid, new_private_key_pem())
        live = [key for key in self.store.signing_keys() if key[3] is None]
        for old_kid, _pem, _created, _retired in live[:-2]:
            self.store.retire_signing_key(old_kid)
        self.store.audit("key-rotated", None, kid=kid)
        # Every gateway reads the new key set when the feed shows this entry.
        self.store.announce(KEYS_CHANGED, "key-rotated")
        self.reload_keys()
        return kid

    def reload_keys(self) -> None:
        """Read the key set again (another process may have rotated it)."""
        self.signer.load(self.store.signing_keys())
        self._keys_loaded_at = time.monotonic()

    # -- users ---------------------------------------------------------------------------

    def create_user(
        self, name: str, password: str | None, *, email: str | None = None, admin: bool = False
    ) -> User:
        """A new account; :class:`AuthRefused` ``weak-password`` or ``name-taken``."""
        password_hash = None
        if password is not None:
            problem = check_new_password(password)
            if problem:
                raise AuthRefused("weak-password", problem)
            password_hash = hash_password(password)
        try:
            user = self.store.add_user(
                uuid.uuid4().hex[:16], name, password_hash=password_hash, email=email, admin=admin
            )
        except AccountError as exc:
            raise AuthRefused("name-taken", str(exc)) from None
        self.store.audit("user-created", user.id, name=name, admin=admin)
        return user

    def user_by_name(self, name: str) -> User:
        """The user named ``name``; :class:`AuthRefused` ``unknown-user``."""
        user = self.store.find_user(name)
        if user is None:
            raise AuthRefused("unknown-user", f"no user named {name[:64]!r}")
        return user

    def disable_user(self, user_id: str, disabled: bool = True) -> None:
        """Disable an account: every session and token of it stops working at once."""
        self.store.set_disabled(user_id, disabled)
        if disabled:
            self.store.revoke_sessions(user_id, "disabled")
        self.store.audit("user-disabled" if disabled else "user-enabled", user_id)

    # -- logins ----------------------------------------------------------------------------

    def login(self, name: str, password: str, totp: str | None, *, ip: str | None) -> Grant:
        """Check a password (and second factor) and start a login."""
        user = self.store.find_user(name) if len(name) <= 64 else None
        if not verify_password(user.password_hash if user else None, password) or user is None:
            self.store.audit("login-failed", user.id if user else None, name=name[:64], ip=ip)
            raise AuthRefused("invalid-credentials", "wrong user name or password")
        if user.disabled:
            self.store.audit("login-failed", user.id, reason="disabled", ip=ip)
            raise AuthRefused("invalid-credentials", "wrong user name or password")
        amr: tuple[str, ...] = ("pwd",)
        if user.mfa:
            if not totp:
                raise AuthRefused("mfa-required", "this account needs a code from its app")
            if not self.check_totp(user, totp):
                self.store.audit("login-failed", user.id, reason="bad-otp", ip=ip)
                raise AuthRefused("invalid-credentials", "the code is wrong or was used already")
            amr = ("pwd", "otp")
        if user.password_hash and needs_rehash(user.password_hash):
            self.store.set_password(user.id, hash_password(password))
        self.store.audit("login", user.id, ip=ip, amr=list(amr))
        return self._start(user, amr)

    def login_external(self, issuer: str, subject: str, name: str, email: str | None) -> Grant:
        """Log in a user of an external identity provider, creating their account once."""
        user = self.store.find_external(issuer, subject)
        if user is None:
            candidate = name[:48] or "user"
            if self.store.find_user(candidate) is not None:
                candidate = f"{candidate}-{secrets.token_hex(3)}"
            user = self.store.add_user(
                uuid.uuid4().hex[:16],
                candidate,
                password_hash=None,
                email=email,
                external=(issuer, subject),
            )
            self.store.audit("user-created", user.id, name=candidate, issuer=issuer)
        if user.disabled:
            raise AuthRefused("invalid-credentials", "this account is disabled")
        self.store.audit("login", user.id, amr=["oidc"], issuer=issuer)
        return self._start(user, ("oidc",))

    def _start(self, user: User, amr: tuple[str, ...]) -> Grant:
        family = uuid.uuid4().hex
        self.store.add_family(family, user.id, amr)
        refresh = self._new_refresh(family)
        return self._grant(user, family, refresh, amr, auth_time=time.time())

    def _new_refresh(self, family: str) -> str:
        token = f"brt_{secrets.token_urlsafe(32)}"
        self.store.add_refresh(token_hash(token), family, time.time() + self.settings.idle_seconds)
        return token

    def _grant(
        self, user: User, family: str, refresh: str, amr: tuple[str, ...], *, auth_time: float
    ) -> Grant:
        ttl = self.settings.access_ttl_seconds
        access = self.signer.sign(
            user.id, ttl_seconds=ttl, family=family, amr=amr, auth_time=auth_time
        )
        return Grant(user, access, int(ttl), refresh, family)

    def refresh(self, token: str) -> Grant:
        """Rotate a refresh token: a new pair, or the whole family revoked on reuse."""
        if not token.startswith("brt_") or len(token) > 200:
            raise AuthRefused("invalid-token", "not a refresh token")
        successor = f"brt_{secrets.token_urlsafe(32)}"
        outcome, record = self.store.rotate_refresh(
            token_hash(token),
            token_hash(successor),
            expires_at=time.time() + self.settings.idle_seconds,
            grace_seconds=self.settings.refresh_grace_seconds,
        )
        if record is None:
            raise AuthRefused("invalid-token", "unknown refresh token")
        family = self.store.get_family(record.family_id)
        if family is None:
            raise AuthRefused("invalid-token", "unknown refresh token")
        if outcome == "reused":
            user_id = self.store.revoke_family(family.id, "token-reuse")
            self.store.audit("token-reuse", user_id, family=family.id)
            raise AuthRefused("token-reused", "this refresh token was used before: log in again")
        now = time.time()
        if family.revoked_at is not None:
            raise AuthRefused("session-ended", "this login has ended: log in again")
        if record.expires_at < now or now - family.created_at > self.settings.absolute_seconds:
            self.store.revoke_family(family.id, "expired")
            raise AuthRefused("session-ended", "this login has expired: log in again")
        user = self.store.get_user(family.user_id)
        if user is None or user.disabled:
            raise AuthRefused("session-ended", "this account is disabled")
        return self._grant(user, family.id, successor, family.amr, auth_time=family.created_at)

    def logout(self, family: str) -> None:
        """End a login: its refresh tokens and access tokens stop working everywhere."""
        user_id = self.store.revoke_family(family, "logout")
        if user_id is not None:
            self.store.audit("logout", user_id, family=family)

    def logout_by_refresh(self, token: str) -> bool:
        """End the login a refresh token (spent or not) belongs to; False if unknown."""
        if not token.startswith("brt_") or len(token) > 200:
            return False
        family = self.store.family_of_refresh(token_hash(token))
        if family is None:
            return False
        self.logout(family)
        return True

    # -- checking credentials ----------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The principal of an access token or scoped token, checked against revocations."""
        try:
            claims = self.signer.verify(token)
        except TokenRefused as refused:
            if refused.reason != "unknown-key" or time.monotonic() - self._keys_loaded_at < 1:
                raise AuthRefused(refused.reason, str(refused)) from None
            # Another process may have rotated the keys: read them again, at most once a second.
            self.reload_keys()
            try:
                claims = self.signer.verify(token)
            except TokenRefused as again:
                raise AuthRefused(again.reason, str(again)) from None
        return self._principal(claims)

    def _principal(self, claims: TokenClaims) -> Principal:
        user = self.store.get_user(claims.subject)
        if user is None or user.disabled:
            raise AuthRefused("revoked", "this account is disabled or gone")
        expires: float | None = claims.expires_at
        if claims.family is not None:
            family = self.store.get_family(claims.family)
            if family is None or family.revoked_at is not None or family.user_id != user.id:
                raise AuthRefused("revoked", "this login has ended")
        elif claims.scope:
            api = self.store.get_api_token(claims.token_id)
            if api is None or api.revoked_at is not None or api.user_id != user.id:
                raise AuthRefused("revoked", "this token was revoked")
            expires = api.expires_at
        else:
            raise AuthRefused("malformed", "a token names a login or a scope")
        return Principal(
            user_id=user.id,
            name=user.name,
            admin=user.admin and not claims.scope,
            family=claims.family,
            token_id=claims.token_id,
            expires_at=expires,
            amr=claims.amr,
            auth_time=claims.auth_time,
            scope=claims.scope,
            mfa_enrolled=user.mfa,
        )

    def still_valid(self, principal: Principal) -> bool:
        """Whether an open session's credential still holds (for the revocation watcher)."""
        user = self.store.get_user(principal.user_id)
        if user is None or user.disabled:
            return False
        if principal.family is not None:
            family = self.store.get_family(principal.family)
            return family is not None and family.revoked_at is None
        if principal.token_id is not None and principal.scope:
            api = self.store.get_api_token(principal.token_id)
            return api is not None and api.revoked_at is None
        return True

    # -- tickets, links and scoped tokens -------------------------------------------------------

    def issue_ticket(self, principal: Principal, board_id: str) -> str:
        """A single-use WebSocket ticket for one board, so the access token stays out of URLs."""
        ticket = f"btk_{secrets.token_urlsafe(24)}"
        subject = f"{board_id}\n{principal.family or ''}\n{principal.token_id or ''}"
        self.store.add_code(
            token_hash(ticket),
            "ticket",
            principal.user_id,
            subject,
            self.settings.ticket_ttl_seconds,
        )
        return ticket

    def redeem_ticket(self, ticket: str, board_id: str) -> Principal:
        """Spend a ticket for ``board_id``; :class:`AuthRefused` if unknown, spent or expired."""
        if not ticket.startswith("btk_") or len(ticket) > 100:
            raise AuthRefused("invalid-ticket", "not a ticket")
        found = self.store.use_code(token_hash(ticket), "ticket")
        if found is None:
            raise AuthRefused("invalid-ticket", "unknown, expired or used ticket")
        user_id, subject = found
        ticket_board, family, token_id = subject.split("\n")
        if ticket_board != board_id:
            raise AuthRefused("invalid-ticket", "the ticket is for another board")
        user = self.store.get_user(user_id)
        if user is None or user.disabled:
            raise AuthRefused("revoked", "this account is disabled or gone")
        principal = Principal(
            user_id=user.id,
            name=user.name,
            admin=user.admin,
            family=family or None,
            token_id=token_id or None,
            mfa_enrolled=user.mfa,
        )
        if token_id and not family:
            api = self.store.get_api_token(token_id)
            if api is None:
                raise AuthRefused("revoked", "this token was revoked")
            principal = Principal(
                user.id, user.name, False, None, token_id, api.expires_at, scope=api.scope
            )
        if not self.still_valid(principal):
            raise AuthRefused("revoked", "this login has ended")
        return principal

    def issue_login_link(self, user: User) -> str:
        """A single-use code that logs ``user`` in (the first-start link)."""
        code = f"bol_{secrets.token_urlsafe(24)}"
        self.store.add_code(
            token_hash(code), "login-link", user.id, "", self.settings.login_link_ttl_seconds
        )
        self.store.audit("login-link-issued", user.id)
        return code

    def redeem_login_link(self, code: str) -> Grant:
        """Spend a login link: a new login for its user."""
        found = self.store.use_code(token_hash(code), "login-link") if len(code) < 100 else None
        if found is None:
            raise AuthRefused("invalid-token", "this link is unknown, expired or used")
        user = self.store.get_user(found[0])
        if user is None or user.disabled:
            raise AuthRefused("invalid-token", "this account is disabled")
        self.store.audit("login", user.id, amr=["link"])
        return self._start(user, ("link",))

    def issue_api_token(
        self,
        user: User,
        scope: dict[str, str],
        *,
        ttl_seconds: float | None,
        label: str = "",
    ) -> tuple[str, str]:
        """A scoped token (board or project, and a role): its id and the JWT."""
        if set(scope) - {"board", "project", "role", "grant"} or "role" not in scope:
            raise AuthRefused("bad-scope", "a scope names a board or project, and a role")
        if ("board" in scope) == ("project" in scope):
            raise AuthRefused("bad-scope", "a scope names either a board or a project")
        if scope.get("grant", "operator") != "operator":
            raise AuthRefused("bad-scope", "grant is 'operator' or absent")
        try:
            Role.parse(scope["role"])
        except ValueError as exc:
            raise AuthRefused("bad-scope", str(exc)) from None
        longest = self.settings.max_api_token_days * 86400
        ttl = min(ttl_seconds, longest) if ttl_seconds is not None else longest
        token_id = f"tok_{secrets.token_urlsafe(12)}"
        now = time.time()
        self.store.add_api_token(
            ApiToken(token_id, user.id, dict(scope), now, now + ttl, None, label[:100])
        )
        token = self.signer.sign(user.id, ttl_seconds=ttl, scope=scope, token_id=token_id)
        self.store.audit("token-issued", user.id, token=token_id, scope=scope)
        return token_id, token

    def revoke_api_token(self, token_id: str) -> bool:
        """Revoke a scoped token everywhere; False if there is no such live token."""
        user_id = self.store.revoke_api_token(token_id)
        if user_id is not None:
            self.store.audit("token-revoked", user_id, token=token_id)
        return user_id is not None

    def change_password(self, principal: Principal, current: str | None, new: str) -> None:
        """Set a user's password; other logins of theirs end (this one stays)."""
        user = self.store.get_user(principal.user_id)
        if user is None:
            raise AuthRefused("invalid-credentials", "no such user")
        if user.password_hash is not None and not (
            current is not None and verify_password(user.password_hash, current)
        ):
            raise AuthRefused("invalid-credentials", "the current password is wrong")
        self.reset_password(user.id, new, keep=principal.family)

    def reset_password(self, user_id: str, new: str, *, keep: str | None = None) -> None:
        """Set a password (no old one asked: for the operator, or after checking it);
        every login of the user but ``keep`` ends."""
        problem = check_new_password(new)
        if problem:
            raise AuthRefused("weak-password", problem)
        self.store.set_password(user_id, hash_password(new))
        self.store.revoke_sessions(user_id, "password-changed", keep=keep)
        self.store.audit("password-changed", user_id)

    # -- second factor ------------------------------------------------------------------------

    def check_totp(self, user: User, code: str) -> bool:
        """Whether ``code`` is a current, unused TOTP code of ``user`` (it is then spent)."""
        if user.totp_secret is None:
            return False
        step = mfa.verify_code(user.totp_secret, code, last_step=user.totp_last_step)
        return step is not None and self.store.use_totp_step(user.id, step)

    def confirm_totp(self, user: User, password: str, secret: str, code: str) -> None:
        """Enrol a TOTP secret once the user shows a code from it and re-enters the password."""
        if not verify_password(user.password_hash, password):
            raise AuthRefused("invalid-credentials", "re-enter your password to change MFA")
        if mfa.verify_code(secret, code, last_step=0) is None:
            raise AuthRefused("invalid-otp", "the code does not match this secret")
        self.store.set_totp(user.id, secret)
        self.store.audit("mfa-enrolled", user.id)

    def remove_totp(self, user: User, password: str, code: str) -> None:
        """Remove the second factor (password and a current code required)."""
        if not verify_password(user.password_hash, password) or not self.check_totp(user, code):
            raise AuthRefused("invalid-credentials", "password and a current code are needed")
        self.store.set_totp(user.id, None)
        self.store.audit("mfa-removed", user.id)

    def fresh_second_factor(self, principal: Principal, code: str | None) -> bool:
        """Whether a sensitive operation may go ahead: a recent second factor, or one now."""
        now = time.time()
        if "otp" in principal.amr and now - principal.auth_time <= self.settings.mfa_fresh_seconds:
            return True
        if code is None:
            return False
        user = self.store.get_user(principal.user_id)
        return user is not None and self.check_totp(user, code)
