"""The OpenID Connect authorization code flow with PKCE, without I/O (docs/oidc.md).

The gateway is the OAuth client: it starts a sign-in (:func:`start_login`: a fresh
``state``, ``nonce`` and PKCE verifier, kept server-side as a :class:`PendingLogin`),
sends the browser to the issuer (:func:`authorization_url`), and on the way back reads
the callback's query (:func:`read_callback`), checks it against the pending login
(:func:`check_pending`) and builds the token request (:func:`token_request`). Every
refusal is a :class:`SignInRefused` with a one-word reason the callback page explains.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from crdt.errors import BoardcastError

__all__ = [
    "Callback",
    "CodeFlowSettings",
    "PendingLogin",
    "PendingLogins",
    "SignInRefused",
    "authorization_url",
    "check_pending",
    "code_challenge",
    "read_callback",
    "safe_return_path",
    "start_login",
    "token_request",
]

#: ``state`` is 32 random bytes, base64url without padding: exactly this shape.
STATE_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
#: A browser-binding secret (the sign-in cookie's value) has the same shape.
BROWSER_PATTERN = STATE_PATTERN
# RFC 6749 appendix A.11: a code is VSCHAR (printable ASCII, space excluded here).
_CODE_CHARACTERS = re.compile(r"[\x21-\x7e]+")
# RFC 6749 4.1.2.1: error codes are NQSCHAR; the ones issuers send are short words.
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_RETURN_PATH_CHARS = 2048


class SignInRefused(BoardcastError):
    """A sign-in through the external issuer that does not go through.

    ``reason`` is one word (``unknown-state``, ``expired-state``, ``reused-state``,
    ``other-browser``, ``bad-callback``, ``provider-error``, ``code-refused``,
    ``issuer-unavailable``, ``busy``, or a :class:`~crdt.errors.TokenRefused` reason of
    the ID token); ``detail`` is for the log.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, kw_only=True)
class CodeFlowSettings:
    """Boardcast as a client of the issuer, and the bounds on sign-ins.

    Args:
        client_id: Boardcast's client id at the issuer (the ID token's ``aud``).
        client_secret: the client secret of a confidential client (sent with HTTP
            Basic to the token endpoint); ``""`` for a public client (PKCE alone).
        redirect_uri: the callback URL registered at the issuer; ``""`` derives it from
            the request that starts the sign-in.
        scopes: scopes asked for; ``openid`` is always among them.
        provider_name: how the sign-in button names the issuer.
        login_ttl_seconds: how long a started sign-in may take, issuer pages included.
        max_pending_logins: sign-ins one gateway keeps open at once; more are refused.
        max_code_chars: the longest authorization code read from a callback.
    """

    client_id: str
    client_secret: str = field(default="", repr=False)
    redirect_uri: str = ""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    provider_name: str = ""
    login_ttl_seconds: float = 600.0
    max_pending_logins: int = 10_000
    max_code_chars: int = 2048

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("the client id (the OIDC audience) is required")
        if "openid" not in self.scopes:
            raise ValueError("scopes must include openid")
        if not all(re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope) for scope in self.scopes):
            raise ValueError("a scope is printable ASCII without spaces, quotes or backslashes")
        if not (math.isfinite(self.login_ttl_seconds) and self.login_ttl_seconds > 0):
            raise ValueError("login_ttl_seconds must be > 0")
        if self.max_pending_logins < 1 or self.max_code_chars < 1:
            raise ValueError("max_pending_logins and max_code_chars must be >= 1")
        if self.redirect_uri:
            parts = urlsplit(self.redirect_uri)
            if parts.scheme not in {"http", "https"} or not parts.hostname or parts.fragment:
                uri = self.redirect_uri
                raise ValueError(f"redirect_uri is not an absolute http(s) URL: {uri!r}")


@dataclass(frozen=True, kw_only=True)
class PendingLogin:
    """A sign-in sent to the issuer and not back yet (kept server-side, never in the page)."""

    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    return_to: str
    browser_hash: str  # SHA-256 of the sign-in cookie's value: binds it to one browser
    started_at: float  # unix seconds

    def to_record(self) -> dict[str, Any]:
        """A plain mapping to keep in shared state."""
        return asdict(self)

    @staticmethod
    def from_record(record: Mapping[str, Any]) -> PendingLogin:
        """The login of :meth:`to_record`; :class:`SignInRefused` if it is not one."""
        try:
            values = {name: record[name] for name in PendingLogin.__dataclass_fields__}
            login = PendingLogin(**values)
        except (KeyError, TypeError) as error:
            raise SignInRefused("unknown-state", "the stored sign-in is unreadable") from error
        if not isinstance(login.started_at, int | float) or not all(
            isinstance(getattr(login, name), str)
            for name in ("state", "nonce", "code_verifier", "redirect_uri", "return_to")
        ):
            raise SignInRefused("unknown-state", "the stored sign-in is unreadable")
        return login


@dataclass(frozen=True)
class Callback:
    """What the issuer sent back through the browser, checked for shape."""

    state: str
    code: str | None  # None when the issuer sent an error instead
    error: str | None


def _random() -> str:
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    """SHA-256 of ``value``, base64url: how a browser secret is kept."""
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()).rstrip(b"=").decode()


def code_challenge(verifier: str) -> str:
    """The PKCE ``S256`` challenge of ``verifier`` (RFC 7636 4.2)."""
    return digest(verifier)


def new_browser_secret() -> str:
    """A fresh value for the sign-in cookie."""
    return _random()


def start_login(
    *, redirect_uri: str, return_to: str, browser_secret: str, now: float
) -> PendingLogin:
    """A new sign-in: fresh ``state``, ``nonce`` and PKCE verifier (43 characters each)."""
    return PendingLogin(
        state=_random(),
        nonce=_random(),
        code_verifier=_random(),
        redirect_uri=redirect_uri,
        return_to=return_to,
        browser_hash=digest(browser_secret),
        started_at=now,
    )


def authorization_url(endpoint: str, settings: CodeFlowSettings, login: PendingLogin) -> str:
    """Where the browser goes to sign in at the issuer (OpenID Connect Core 3.1.2.1)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": login.redirect_uri,
            "scope": " ".join(settings.scopes),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": code_challenge(login.code_verifier),
            "code_challenge_method": "S256",
        }
    )
    return endpoint + ("&" if urlsplit(endpoint).query else "?") + query


def safe_return_path(value: str | None) -> str:
    """A same-origin path to land on after signing in; :class:`SignInRefused` otherwise.

    Only a path of this site: it starts with one ``/`` (``//host`` and ``/\\host`` are
    other sites to a browser), has no scheme, host, backslash or control character.
    ``None`` or ``""`` is ``/``.
    """
    if not value:
        return "/"
    if len(value) > _MAX_RETURN_PATH_CHARS:
        raise SignInRefused("bad-callback", "the return path is too long")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value) or "\\" in value:
        raise SignInRefused("bad-callback", "the return path has a control character")
    if not value.startswith("/") or value.startswith("//"):
        raise SignInRefused("bad-callback", "the return path is not a path of this site")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise SignInRefused("bad-callback", "the return path names another site")
    return value


def read_callback(query: Mapping[str, str], *, issuer: str, max_code_chars: int) -> Callback:
    """The callback's ``state`` and ``code`` (or ``error``), checked for shape.

    ``iss``, when the issuer sends it (RFC 9207), must be the configured issuer: a
    response from another issuer is refused (the mix-up attack).
    """
    state = query.get("state", "")
    if not STATE_PATTERN.fullmatch(state):
        raise SignInRefused("unknown-state", "no state of this server's shape")
    sent_issuer = query.get("iss")
    if sent_issuer is not None and sent_issuer != issuer:
        raise SignInRefused("bad-callback", "the response names another issuer")
    error = query.get("error")
    if error is not None:
        if not _ERROR_CODE.fullmatch(error):
            raise SignInRefused("bad-callback", "the error is not an error code")
        return Callback(state, None, error)
    code = query.get("code", "")
    if not code or len(code) > max_code_chars or not _CODE_CHARACTERS.fullmatch(code):
        raise SignInRefused("bad-callback", f"no code of 1-{max_code_chars} printable characters")
    return Callback(state, code, None)


def check_pending(
    login: PendingLogin, *, browser_secret: str | None, now: float, ttl_seconds: float
) -> None:
    """Refuse a callback that is late or that another browser started."""
    if not now - login.started_at <= ttl_seconds:
        raise SignInRefused("expired-state", "the sign-in took too long")
    if browser_secret is None or not hmac.compare_digest(
        digest(browser_secret), login.browser_hash
    ):
        raise SignInRefused("other-browser", "the sign-in was started in another browser")


def token_request(
    settings: CodeFlowSettings, login: PendingLogin, code: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of the code exchange (RFC 6749 4.1.3, RFC 7636 4.5).

    A confidential client authenticates with HTTP Basic (``client_secret_basic``, the
    method every issuer supports); a public one sends its ``client_id`` in the form.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": login.redirect_uri,
        "code_verifier": login.code_verifier,
    }
    headers: dict[str, str] = {}
    if settings.client_secret:
        # RFC 6749 2.3.1: both parts form-encoded before Basic encoding.
        pair = f"{_form_encode(settings.client_id)}:{_form_encode(settings.client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = settings.client_id
    return form, headers


def _form_encode(value: str) -> str:
    return urlencode({"": value})[1:]


def id_token_of(status: int, body: Any) -> str:
    """The ID token of a token endpoint's answer; :class:`SignInRefused` if it has none."""
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        named = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "no error"
        raise SignInRefused("code-refused", f"the token endpoint answered {status} ({named})")
    token = body.get("id_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise SignInRefused("code-refused", "the token endpoint sent no id_token")
    return token


class PendingLogins:
    """How many sign-ins this gateway has started that may still come back.

    A bound, not a store (the logins themselves are in shared state): a flood of
    started sign-ins cannot grow memory or shared state past ``limit`` live ones.
    """

    def __init__(self, *, limit: int, ttl_seconds: float) -> None:
        self._limit = limit
        self._ttl = ttl_seconds
        self._expiries: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Count one more sign-in started at ``now`` (monotonic), if there is room."""
        while self._expiries and self._expiries[0] <= now:
            self._expiries.popleft()
        if len(self._expiries) >= self._limit:
            return False
        self._expiries.append(now + self._ttl)
        return True

    def __len__(self) -> int:
        return len(self._expiries)
