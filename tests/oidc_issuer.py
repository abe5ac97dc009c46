"""A real OpenID Connect issuer on 127.0.0.1 for tests: discovery, JWKS, and token minting.

    async with LocalIssuer() as issuer:
        verifier = OidcVerifier(issuer.settings())
        token = issuer.mint(sub="alice", email="alice@example.org")
        identity = await verifier.verify(token)

The issuer holds one RSA (RS256) and one EC (ES256) signing key and publishes both at
``/jwks``. :meth:`LocalIssuer.rotate` replaces them (the old ones leave the JWKS unless
``keep_old``). :meth:`LocalIssuer.mint` signs any claims and headers a test wants, with
any of its keys or an outside one; :func:`mint_unsigned` and :func:`mint_hmac` build the
forgeries (``alg: none``, HMAC with a public key as the secret) that no library signs.
``requests`` counts what clients fetched (``paths``: every request, by path);
``serve_jwks`` and ``fail_with`` make the issuer misbehave. A second ``LocalIssuer`` is
a handy attacker's server.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from auth.oidc import OidcSettings

DEFAULT_AUDIENCE = "boardcast-web"


@dataclass(frozen=True)
class SigningKey:
    """A private key with its ``kid`` and algorithm (``RS256`` or ``ES256``)."""

    kid: str
    alg: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)

    @staticmethod
    def generate(alg: str = "RS256", kid: str | None = None) -> SigningKey:
        """A fresh key: RSA 2048 for ``RS256``, P-256 for ``ES256``."""
        private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if alg == "RS256":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"no keys for {alg}")
        return SigningKey(kid or f"{alg.lower()}-{secrets.token_hex(6)}", alg, private_key)

    def sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A compact JWS of ``header`` and ``claims`` signed with this key, taken as they
        are (no library check: a test may sign any header, even a malformed one)."""
        signing_input = f"{_segment(header)}.{_segment(claims)}".encode()
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            signature = self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            der = self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input.decode() + "." + _base64url(signature)

    def public_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo), as an attacker could download it."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK, with ``kid``, ``alg`` and ``use: sig``."""
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(data: dict[str, Any]) -> str:
    return _base64url(json.dumps(data, separators=(",", ":")).encode())


def mint_unsigned(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    """A token with ``alg: none`` (or the ``alg`` in ``headers``) and an empty signature."""
    header = {"alg": "none", "typ": "JWT", **(headers or {})}
    return f"{_segment(header)}.{_segment(claims)}."


def mint_hmac(claims: dict[str, Any], secret: bytes, headers: dict[str, Any] | None = None) -> str:
    """A token signed with HMAC-SHA256 and ``secret`` (say, an issuer's public key bytes)."""
    header = {"alg": "HS256", "typ": "JWT", **(headers or {})}
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _base64url(signature)


class LocalIssuer:
    """An aiohttp OIDC issuer on 127.0.0.1 port 0 (see the module docstring).

    Args:
        audience: the client id its tokens are for by default.
        path: a path under the host for the issuer URL (``"/realms/test"``), as some
            issuers have.
    """

    def __init__(self, *, audience: str = DEFAULT_AUDIENCE, path: str = "") -> None:
        self.audience = audience
        self._path = path.rstrip("/")
        self.keys: list[SigningKey] = [SigningKey.generate("RS256"), SigningKey.generate("ES256")]
        #: Requests served, by endpoint: ``"discovery"``, ``"jwks"``.
        self.requests: collections.Counter[str] = collections.Counter()
        #: Every request received, by path, unknown paths included.
        self.paths: collections.Counter[str] = collections.Counter()
        self._jwks_override: bytes | None = None
        self._failure_status: int | None = None
        #: Members replacing those of the discovery document it serves.
        self.discovery_overrides: dict[str, Any] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle

    async def start(self) -> LocalIssuer:
        """Listen on a free loopback port; :attr:`url` is known from then on."""
        app = web.Application(middlewares=[self._count_path])
        app.router.add_get(self._path + "/.well-known/openid-configuration", self._discovery)
        app.router.add_get(self._path + "/jwks", self._jwks)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self._port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening; connections to the port are refused until :meth:`start` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LocalIssuer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- addresses

    @property
    def url(self) -> str:
        """The issuer identifier: ``iss`` of its tokens and ``issuer`` of its discovery."""
        return f"http://127.0.0.1:{self._port}{self._path}"

    @property
    def jwks_url(self) -> str:
        """Where its JWKS is served."""
        return self.url + "/jwks"

    def settings(self, **overrides: Any) -> OidcSettings:
        """:class:`OidcSettings` for this issuer (discovered JWKS); ``overrides`` win."""
        values: dict[str, Any] = {"issuer": self.url, "audience": self.audience, **overrides}
        return OidcSettings(**values)

    # -- keys

    def key(self, alg: str = "RS256") -> SigningKey:
        """The newest published key for ``alg``."""
        return next(key for key in reversed(self.keys) if key.alg == alg)

    def rotate(self, algs: Iterable[str] = ("RS256", "ES256"), *, keep_old: bool = False) -> None:
        """New signing keys for ``algs``; older keys of those algorithms leave the JWKS
        unless ``keep_old``."""
        algs = tuple(algs)
        if not keep_old:
            self.keys = [key for key in self.keys if key.alg not in algs]
        self.keys.extend(SigningKey.generate(alg) for alg in algs)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document it serves (unless :meth:`serve_jwks` replaced it)."""
        return {"keys": [key.public_jwk() for key in self.keys]}

    # -- misbehaving

    def serve_jwks(self, document: bytes | dict[str, Any] | None) -> None:
        """Serve ``document`` at ``/jwks`` instead of the real key set (``None``: the real one)."""
        if isinstance(document, dict):
            document = json.dumps(document).encode()
        self._jwks_override = document

    def fail_with(self, status: int | None) -> None:
        """Answer every request with ``status`` (``None``: answer normally again)."""
        self._failure_status = status

    # -- tokens

    def claims(self, *, omit: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
        """Claims of a valid ID token, valid for 10 minutes from now; ``overrides`` win,
        ``omit`` names claims to leave out."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            "email": "user-1@example.org",
            "email_verified": True,
            "name": "User One",
        }
        claims.update(overrides)
        for name in omit:
            claims.pop(name, None)
        return claims

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        alg: str = "RS256",
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        omit: Iterable[str] = (),
        **overrides: Any,
    ) -> str:
        """A signed token: ``claims`` (default :meth:`claims` with ``overrides``/``omit``),
        signed by ``key`` (default this issuer's key for ``alg``); ``headers`` are added
        to ``alg``, ``typ`` and ``kid`` (``{"kid": None}`` leaves the kid out)."""
        signer = key or self.key(alg)
        body = claims if claims is not None else self.claims(omit=omit, **overrides)
        header: dict[str, Any] = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
        header.update(headers or {})
        if header.get("kid") is None:
            header.pop("kid")
        return signer.sign(header, body)

    def access_token(self, **overrides: Any) -> str:
        """An RFC 9068 JWT access token (``typ: at+jwt``, ``client_id``) for the audience."""
        claims = self.claims(client_id=self.audience, **overrides)
        return self.mint(claims, headers={"typ": "at+jwt"})

    # -- handlers

    @web.middleware
    async def _count_path(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.paths[request.path] += 1
        return await handler(request)

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        self.requests["discovery"] += 1
        if self._failure_status is not None:
            return web.Response(status=self._failure_status)
        document = {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }
        return web.json_response(document | self.discovery_overrides)

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.requests["jwks"] += 1
        if self._failure_status is not None:
            return web.Response(status=self._failure_status)
        if self._jwks_override is not None:
            return web.Response(body=self._jwks_override, content_type="application/json")
        return web.json_response(self.jwks())
