"""Checking tokens from an external OpenID Connect issuer (docs/oidc.md).

:class:`OidcVerifier` turns an ID token or JWT access token into an
:class:`ExternalIdentity`, or raises :class:`~crdt.errors.TokenRefused` with a one-word
reason. Keys come only from the issuer's JWKS, fetched by the verifier itself: nothing in
a token may name a key (``jku``, ``jwk``, ``x5u``, ``x5c``), only asymmetric algorithms
from a fixed list are accepted, and every fetch is bounded in size, time and frequency.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from crdt.errors import TokenRefused

__all__ = ["ExternalIdentity", "OidcSettings", "OidcVerifier", "TokenRefused"]

logger = logging.getLogger(__name__)

# The algorithms this module can check, and the key each needs: (kty, crv).
# HMAC algorithms are absent on purpose: with them the "key" would be public JWKS data.
_KEY_FOR_ALGORITHM: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
# Only the public members of a JWK are ever handed to the key parser.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# Headers that name a key or a place to get one: a token never chooses its own key.
_KEY_NAMING_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})
_TOKEN_TYPES = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192  # verification cost grows with the modulus; no issuer needs more
_MAX_KID_CHARS = 256
_MAX_CLAIM_CHARS = 1024  # sub, email, name: longer values are not from a real issuer
_LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
_LOOPBACK_NAMES = frozenset({"localhost"})
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """One external issuer, and the limits on talking to it.

    Args:
        issuer: the issuer URL, exactly as the tokens' ``iss`` and the discovery
            document's ``issuer`` spell it. ``https`` (plain ``http`` only on loopback).
        audience: this application's client id at the issuer (the tokens' ``aud``).
        jwks_url: where the issuer's keys are; ``None`` reads ``jwks_uri`` from
            ``{issuer}/.well-known/openid-configuration``.
        algorithms: signature algorithms accepted; asymmetric ones only.
        leeway_seconds: clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        jwks_cache_seconds: how long a fetched key set is used before it is fetched again.
        jwks_max_stale_seconds: how long past that an old key set is still used while the
            issuer cannot be reached.
        min_refetch_seconds: at most one fetch of the key set in this many seconds, whatever
            tokens arrive (unknown ``kid``s included).
        http_timeout_seconds: one request to the issuer, connect to last byte.
        max_document_bytes: largest discovery or JWKS document read.
        max_keys: most keys a JWKS may hold; a larger one is refused whole.
        max_token_bytes: longest token looked at.
    """

    issuer: str
    audience: str
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: float = 60.0
    jwks_cache_seconds: float = 3600.0
    jwks_max_stale_seconds: float = 86400.0
    min_refetch_seconds: float = 60.0
    http_timeout_seconds: float = 5.0
    max_document_bytes: int = 131072
    max_keys: int = 32
    max_token_bytes: int = 16384

    def __post_init__(self) -> None:
        _check_url(self.issuer, "issuer")
        if self.jwks_url is not None:
            _check_url(self.jwks_url, "jwks_url")
        if not self.audience:
            raise ValueError("audience (the client id) is required")
        if not self.algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        for algorithm in self.algorithms:
            if algorithm not in _KEY_FOR_ALGORITHM:
                raise ValueError(
                    f"algorithm {algorithm!r} is not accepted: use one of "
                    + ", ".join(_KEY_FOR_ALGORITHM)
                )
        numbers = {
            "leeway_seconds": self.leeway_seconds,
            "jwks_cache_seconds": self.jwks_cache_seconds,
            "jwks_max_stale_seconds": self.jwks_max_stale_seconds,
            "min_refetch_seconds": self.min_refetch_seconds,
        }
        for name, value in numbers.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0")
        if not (math.isfinite(self.http_timeout_seconds) and self.http_timeout_seconds > 0):
            raise ValueError("http_timeout_seconds must be > 0")
        for name, count in {
            "max_document_bytes": self.max_document_bytes,
            "max_keys": self.max_keys,
            "max_token_bytes": self.max_token_bytes,
        }.items():
            if count < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def discovery_url(self) -> str:
        """Where the issuer's discovery document is (OpenID Connect Discovery 1.0, 4)."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True, kw_only=True)
class ExternalIdentity:
    """Who a verified token says its bearer is, at the issuer that signed it."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    expires_at: datetime


class _FetchFailed(Exception):
    """The issuer did not hand over a usable document; the message says why."""


# kid -> the keys published under it, one PyJWK per algorithm the key may verify.
_KeySet = dict[str | None, list[jwt.PyJWK]]


class OidcVerifier:
    """Verifies tokens of one issuer, keeping its key set cached.

    Args:
        settings: the issuer and limits.
        session: an aiohttp session to fetch with; without one the verifier opens its own
            (closed by :meth:`close`).
        clock: monotonic seconds, for the cache and the refetch bound (tests pass their own).
    """

    def __init__(
        self,
        settings: OidcSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._jwks_url = settings.jwks_url
        self._keys: _KeySet | None = None
        self._keys_fetched_at = 0.0
        self._last_attempt: float | None = None
        self._attempts = 0
        self._metadata: tuple[float, dict[str, Any]] | None = None

    @property
    def settings(self) -> OidcSettings:
        """The settings this verifier was made with."""
        return self._settings

    async def close(self) -> None:
        """Close the HTTP session if this verifier opened it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def verify(self, token: str, *, nonce: str | None = None) -> ExternalIdentity:
        """Check ``token`` and say whose it is; raise :class:`TokenRefused` otherwise.

        Args:
            token: a compact JWS (the ID token or a JWT access token), without ``Bearer``.
            nonce: when given, the token's ``nonce`` claim must equal it (login flows).
        """
        settings = self._settings
        if not isinstance(token, str):
            raise TokenRefused("malformed", "a token is a string")
        if len(token) > settings.max_token_bytes:
            raise TokenRefused("too-large", f"over {settings.max_token_bytes} bytes")
        header = _unverified_header(token)
        algorithm = self._check_header(header)
        kid = header.get("kid")
        key = await self._key_for(kid, algorithm)
        claims = self._decode(token, key, algorithm)
        return self._identity(claims, nonce)

    def _check_header(self, header: dict[str, Any]) -> str:
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise TokenRefused("bad-algorithm", "no alg")
        # Refused by name before anything else: none and HMAC would make the public JWKS
        # (or nothing at all) the signing secret.
        if algorithm.lower() == "none" or algorithm.upper().startswith("HS"):
            raise TokenRefused("bad-algorithm", f"{algorithm} is never accepted")
        if algorithm not in self._settings.algorithms:
            raise TokenRefused("bad-algorithm", f"{algorithm} is not accepted")
        named = _KEY_NAMING_HEADERS.intersection(header)
        if named:
            raise TokenRefused("bad-header", "the token names its own key: " + ",".join(named))
        if "crit" in header or "b64" in header:
            raise TokenRefused("bad-header", "critical header extensions are not supported")
        kid = header.get("kid")
        if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= _MAX_KID_CHARS):
            raise TokenRefused("bad-header", "kid is not a short string")
        token_type = header.get("typ")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() not in _TOKEN_TYPES
        ):
            raise TokenRefused("bad-header", "typ is not a JWT type")
        return algorithm

    async def _key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        now = self._clock()
        if self._keys is None or now - self._keys_fetched_at >= self._settings.jwks_cache_seconds:
            await self._refresh(self._attempts)
        key = self._lookup(kid, algorithm)
        usable = self._usable_keys()
        if key is None and usable is not None and kid not in usable:
            # A kid we have not seen: the issuer may have rolled its keys. The refetch is
            # bounded by min_refetch_seconds, so random kids cannot make us hammer it.
            await self._refresh(self._attempts)
            key = self._lookup(kid, algorithm)
        if key is not None:
            return key
        if self._usable_keys() is None:
            raise TokenRefused("issuer-unavailable", "no current key set from the issuer")
        raise TokenRefused("unknown-key", "no key of the issuer fits the token's kid and alg")

    def _usable_keys(self) -> _KeySet | None:
        """The cached key set, unless it is past its cache time and the stale allowance."""
        age = self._clock() - self._keys_fetched_at
        if age >= self._settings.jwks_cache_seconds + self._settings.jwks_max_stale_seconds:
            return None
        return self._keys

    def _lookup(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        keys = self._usable_keys()
        if keys is None:
            return None
        if kid is None:
            # Without a kid a token can only mean the issuer's one key for its algorithm.
            fitting = [key for group in keys.values() for key in group]
            fitting = [key for key in fitting if key.algorithm_name == algorithm]
            return fitting[0] if len(fitting) == 1 else None
        for key in keys.get(kid, ()):
            if key.algorithm_name == algorithm:
                return key
        return None

    async def _refresh(self, attempts_seen: int) -> None:
        async with self._lock:
            if self._attempts != attempts_seen:
                return  # another call fetched while this one waited for the lock
            now = self._clock()
            last = self._last_attempt
            if last is not None and now - last < self._settings.min_refetch_seconds:
                return
            self._last_attempt = now
            self._attempts += 1
            try:
                keys = await self._fetch_keys()
            except _FetchFailed as error:
                logger.warning("OIDC %s: key set not fetched: %s", self._settings.issuer, error)
                return
            except Exception:
                # Whatever the network or the document does, a token is refused, never
                # answered with a crash; the traceback goes to the log.
                logger.exception("OIDC %s: key set not fetched", self._settings.issuer)
                return
            self._keys = keys
            self._keys_fetched_at = now

    async def _fetch_keys(self) -> _KeySet:
        if self._jwks_url is None:
            discovery = await self._fetch_json(self._settings.discovery_url)
            self._jwks_url = _jwks_url_from(discovery, self._settings.issuer)
        url = self._jwks_url
        try:
            document = await self._fetch_json(url)
        except _FetchFailed:
            if self._settings.jwks_url is None:
                self._jwks_url = None  # discover again next time: the issuer may have moved it
            raise
        return _parse_jwks(document, self._settings)

    async def provider_metadata(self) -> dict[str, Any]:
        """The issuer's discovery document, checked; cached for ``jwks_cache_seconds``.

        Its ``issuer`` must be the configured one; ``authorization_endpoint`` and
        ``token_endpoint``, when present, must be ``https`` (``http`` on loopback). Raises
        :class:`TokenRefused` ``issuer-unavailable`` when it cannot be had.
        """
        now = self._clock()
        cached = self._metadata
        if cached is not None and now - cached[0] < self._settings.jwks_cache_seconds:
            return cached[1]
        try:
            document = await self._fetch_json(self._settings.discovery_url)
            _jwks_url_from(document, self._settings.issuer)
            for name in ("authorization_endpoint", "token_endpoint"):
                url = document.get(name)
                if url is not None:
                    if not isinstance(url, str):
                        raise _FetchFailed(f"{name} is not a URL")
                    try:
                        _check_url(url, name)
                    except ValueError as error:
                        raise _FetchFailed(str(error)) from error
        except _FetchFailed as error:
            logger.warning("OIDC %s: discovery failed: %s", self._settings.issuer, error)
            raise TokenRefused("issuer-unavailable", str(error)) from None
        self._metadata = (now, document)
        return dict(document)

    async def post_form(
        self, url: str, form: Mapping[str, str], *, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST ``form`` to one of the issuer's endpoints: its status and JSON body.

        Bounded as every request to the issuer is (time, size, no redirects). A body that
        is not JSON is ``None``. Raises :class:`TokenRefused` ``issuer-unavailable`` when
        no answer comes.
        """
        try:
            return await self._request_json(
                "POST", url, form=form, headers=headers, any_status=True
            )
        except _FetchFailed as error:
            logger.warning("OIDC %s: %s", self._settings.issuer, error)
            raise TokenRefused("issuer-unavailable", str(error)) from None

    async def _fetch_json(self, url: str) -> Any:
        _, document = await self._request_json("GET", url)
        return document

    async def _request_json(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        any_status: bool = False,
    ) -> tuple[int, Any]:
        limit = self._settings.max_document_bytes
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self._settings.http_timeout_seconds)
        sent = {"Accept": "application/json", "Accept-Encoding": "identity", **(headers or {})}
        try:
            async with self._session.request(
                method,
                url,
                data=dict(form) if form is not None else None,
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,
                headers=sent,
            ) as response:
                status = response.status
                if status != 200 and not (any_status and 400 <= status < 500):
                    raise _FetchFailed(f"{url} answered {status}")
                if response.content_length is not None and response.content_length > limit:
                    raise _FetchFailed(f"{url} is over {limit} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > limit:
                        raise _FetchFailed(f"{url} is over {limit} bytes")
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise _FetchFailed(f"{url}: {type(error).__name__}: {error}") from error
        try:
            return status, json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as error:
            if any_status:
                return status, None
            raise _FetchFailed(f"{url} is not JSON") from error

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        settings = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidSignatureError as error:
            raise TokenRefused("bad-signature") from error
        except jwt.ExpiredSignatureError as error:
            raise TokenRefused("expired") from error
        except jwt.ImmatureSignatureError as error:
            raise TokenRefused("not-yet-valid", str(error)) from error
        except jwt.InvalidIssuerError as error:
            raise TokenRefused("wrong-issuer") from error
        except jwt.InvalidAudienceError as error:
            raise TokenRefused("wrong-audience") from error
        except jwt.MissingRequiredClaimError as error:
            raise TokenRefused("missing-claim", error.claim) from error
        except jwt.InvalidAlgorithmError as error:
            raise TokenRefused("bad-algorithm", str(error)) from error
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError) as error:
            raise TokenRefused("malformed", f"{type(error).__name__}: {error}") from error
        if not isinstance(claims, dict):
            raise TokenRefused("malformed", "claims are not an object")
        return claims

    def _identity(self, claims: dict[str, Any], nonce: str | None) -> ExternalIdentity:
        audience = claims["aud"]
        authorized_party = claims.get("azp")
        # OpenID Connect Core 3.1.3.7: a token for several audiences must say which party
        # it was issued to, and that party must be us.
        several = isinstance(audience, list) and len(audience) > 1
        if (
            several or authorized_party is not None
        ) and authorized_party != self._settings.audience:
            raise TokenRefused("wrong-audience", "azp is not this client")
        if nonce is not None:
            claimed = claims.get("nonce")
            if not isinstance(claimed, str) or not hmac.compare_digest(
                claimed.encode(), nonce.encode()
            ):
                raise TokenRefused("wrong-nonce")
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= _MAX_CLAIM_CHARS:
            raise TokenRefused("missing-claim", "sub")
        expiry = claims["exp"]
        if isinstance(expiry, bool) or not isinstance(expiry, int | float):
            raise TokenRefused("malformed", "exp is not a number")
        if not expiry < _LATEST_EXPIRY:
            raise TokenRefused("malformed", "exp is too far in the future")
        return ExternalIdentity(
            issuer=self._settings.issuer,
            subject=subject,
            email=_short_string(claims.get("email")),
            email_verified=_truthy(claims.get("email_verified")),
            name=_short_string(claims.get("name")),
            expires_at=datetime.fromtimestamp(expiry, tz=UTC),
        )


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, read before anything is trusted."""
    segments = token.split(".")
    if not token.isascii() or len(segments) != 3 or not all(segments[:2]):
        raise TokenRefused("malformed", "not a compact JWS")
    encoded = segments[0]
    if not set(encoded) <= _BASE64URL or len(encoded) % 4 == 1:
        raise TokenRefused("malformed", "header is not base64url")
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, RecursionError) as error:
        raise TokenRefused("malformed", "header is not JSON") from error
    if not isinstance(header, dict):
        raise TokenRefused("malformed", "header is not an object")
    return header


def _short_string(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_CLAIM_CHARS:
        return value
    return None


def _truthy(value: object) -> bool:
    # Some issuers send the strings "true"/"false" instead of JSON booleans.
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise ValueError(f"{what} must be an https URL (plain http only on loopback): {url!r}")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jwks_url_from(discovery: Any, issuer: str) -> str:
    if not isinstance(discovery, dict):
        raise _FetchFailed("the discovery document is not an object")
    # OpenID Connect Discovery 1.0, 4.3: the document must name exactly this issuer.
    if discovery.get("issuer") != issuer:
        raise _FetchFailed("the discovery document names another issuer")
    url = discovery.get("jwks_uri")
    if not isinstance(url, str):
        raise _FetchFailed("the discovery document has no jwks_uri")
    try:
        _check_url(url, "jwks_uri")
    except ValueError as error:
        raise _FetchFailed(str(error)) from error
    return url


def _parse_jwks(document: Any, settings: OidcSettings) -> _KeySet:
    """The usable verification keys of a JWKS document; unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchFailed("the JWKS is not an object with a keys list")
    entries: list[Any] = document["keys"]
    if len(entries) > settings.max_keys:
        raise _FetchFailed(f"the JWKS holds {len(entries)} keys, over {settings.max_keys}")
    keys: _KeySet = {}
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= _MAX_KID_CHARS):
            continue
        for algorithm in _algorithms_for(entry, settings.algorithms):
            key = _build_key(entry, algorithm)
            if key is not None:
                keys.setdefault(kid, []).append(key)
    return keys


def _algorithms_for(entry: Any, accepted: tuple[str, ...]) -> list[str]:
    """The accepted algorithms a JWK may verify, from its kty, crv, alg, use and key_ops."""
    if not isinstance(entry, dict) or _PRIVATE_MEMBERS.intersection(entry):
        return []  # a JWKS that publishes secret material is not trusted for anything
    kty = entry.get("kty")
    if not isinstance(kty, str) or kty not in _PUBLIC_MEMBERS:
        return []
    use = entry.get("use", "sig")
    operations = entry.get("key_ops", ["verify"])
    if use != "sig" or not isinstance(operations, list) or "verify" not in operations:
        return []
    declared = entry.get("alg")
    fitting = []
    for algorithm in accepted:
        wanted_kty, wanted_crv = _KEY_FOR_ALGORITHM[algorithm]
        if kty != wanted_kty or (wanted_crv is not None and entry.get("crv") != wanted_crv):
            continue
        if declared is not None and declared != algorithm:
            continue
        fitting.append(algorithm)
    return fitting


def _build_key(entry: dict[str, Any], algorithm: str) -> jwt.PyJWK | None:
    kty = entry["kty"]
    public = {"kty": kty}
    for member in _PUBLIC_MEMBERS[kty]:
        value = entry.get(member)
        if not isinstance(value, str) or len(value) > 4096:
            return None
        public[member] = value
    try:
        key = jwt.PyJWK(public, algorithm=algorithm)
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as error:
        logger.debug("OIDC: JWK skipped: %s", error)
        return None
    if kty == "RSA":
        numbers = key.key.public_numbers()
        # A huge exponent or modulus would make every verification slow.
        if not _MIN_RSA_BITS <= numbers.n.bit_length() <= _MAX_RSA_BITS or numbers.e >= 2**32:
            return None
    return key
