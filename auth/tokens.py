"""Access tokens: ES256 JWTs that Boardcast signs and checks itself.

Why PyJWT, and how: python-jose (named in the original design) is unmaintained and
its algorithm-confusion fix was bypassed in 2026; PyJWT >= 2.13 is maintained. The
checks below do not rely on library defaults: one algorithm (ES256) is allowed, the
key is chosen by our ``kid`` from our own key list (a ``jku``, ``jwk``, ``x5u`` or
``x5c`` header is refused outright), ``typ`` must be ``at+jwt`` (RFC 9068), and
``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, ``sub`` and ``jti`` are required.

Keys rotate without logging anyone out: a new key signs from the moment it is
added, older ones keep verifying until they are retired (after the longest
access-token lifetime has passed).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crdt.errors import TokenRefused

__all__ = ["TokenClaims", "TokenRefused", "TokenSigner"]

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"
#: A token longer than this is not ours; refused before any parsing.
MAX_TOKEN_CHARS = 8192
_FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit"})


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified access token says."""

    subject: str  # the user id
    token_id: str  # jti
    issued_at: float
    expires_at: float
    family: str | None = None  # the login's refresh family (None: a scoped API token)
    amr: tuple[str, ...] = ()  # how the user proved themselves
    auth_time: float = 0.0  # when they last did
    scope: dict[str, str] = field(default_factory=dict)  # API tokens: board or project, role


def new_private_key_pem() -> bytes:
    """A fresh P-256 private key, PEM (PKCS#8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_key_id() -> str:
    """A key id: random, short, URL-safe."""
    return secrets.token_urlsafe(9)


class TokenSigner:
    """Signs and verifies access tokens with a set of keys, the newest signing."""

    def __init__(self, *, issuer: str, audience: str, leeway_seconds: float = 30.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self._private: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._public: dict[str, ec.EllipticCurvePublicKey] = {}
        self._active: str | None = None

    def load(self, keys: list[tuple[str, bytes, float, float | None]]) -> None:
        """Replace the key set: (kid, private PEM, created, retired), oldest first."""
        private: dict[str, ec.EllipticCurvePrivateKey] = {}
        active = None
        for kid, pem, _created, retired in keys:
            if retired is not None:
                continue
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"signing key {kid} is not an EC key")
            private[kid] = key
            active = kid
        self._private = private
        self._public = {kid: key.public_key() for kid, key in private.items()}
        self._active = active

    @property
    def active_key_id(self) -> str | None:
        """The kid new tokens are signed with."""
        return self._active

    def knows(self, kid: str) -> bool:
        """Whether ``kid`` is one of the current (unretired) keys."""
        return kid in self._public

    def sign(
        self,
        subject: str,
        *,
        ttl_seconds: float,
        family: str | None = None,
        amr: tuple[str, ...] = (),
        auth_time: float | None = None,
        scope: dict[str, str] | None = None,
        token_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """A signed access token for ``subject``."""
        if self._active is None:
            raise RuntimeError("no signing key: the account store has none yet")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(ttl_seconds),
            "jti": token_id or secrets.token_urlsafe(12),
            "auth_time": int(auth_time if auth_time is not None else issued),
        }
        if family is not None:
            claims["sid"] = family
        if amr:
            claims["amr"] = list(amr)
        if scope:
            claims["scope"] = dict(scope)
        return jwt.encode(
            claims,
            self._private[self._active],
            algorithm=ALGORITHM,
            headers={"kid": self._active, "typ": TOKEN_TYPE},
        )

    def verify(self, token: str) -> TokenClaims:
        """The claims of a token we signed; :class:`TokenRefused` for anything else."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenRefused("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRefused("malformed") from None
        if _FORBIDDEN_HEADERS & header.keys():
            raise TokenRefused("bad-header", "keys named by the token are never used")
        if header.get("alg") != ALGORITHM:
            raise TokenRefused("bad-algorithm", str(header.get("alg"))[:20])
        if header.get("typ") != TOKEN_TYPE:
            raise TokenRefused("wrong-type")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self._public:
            raise TokenRefused("unknown-key")
        try:
            claims = jwt.decode(
                token,
                self._public[kid],
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("not-yet-valid") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("wrong-audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("wrong-issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("bad-signature") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRefused("malformed", type(exc).__name__) from None
        return _claims(claims)


def _claims(raw: dict[str, Any]) -> TokenClaims:
    subject, token_id = raw.get("sub"), raw.get("jti")
    if not isinstance(subject, str) or not isinstance(token_id, str):
        raise TokenRefused("malformed", "sub and jti are strings")
    family = raw.get("sid")
    amr = raw.get("amr", [])
    scope = raw.get("scope", {})
    if family is not None and not isinstance(family, str):
        raise TokenRefused("malformed", "sid")
    if not isinstance(amr, list) or not all(isinstance(item, str) for item in amr):
        raise TokenRefused("malformed", "amr")
    if not isinstance(scope, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scope.items()
    ):
        raise TokenRefused("malformed", "scope")
    auth_time = raw.get("auth_time", raw["iat"])
    return TokenClaims(
        subject=subject,
        token_id=token_id,
        issued_at=float(raw["iat"]),
        expires_at=float(raw["exp"]),
        family=family,
        amr=tuple(amr),
        auth_time=float(auth_time) if isinstance(auth_time, int | float) else float(raw["iat"]),
        scope=scope,
    )
