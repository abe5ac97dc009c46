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

It is also a real authorization server for the code flow with PKCE: ``/authorize`` checks
the request (client id, registered redirect URI, ``S256`` challenge, ``state``, ``nonce``)
and shows a small sign-in form (a username is enough); signing in sends the browser back
to the redirect URI with a single-use code, which ``/token`` exchanges (client secret by
HTTP Basic or in the form, PKCE verifier checked) for an ID token carrying the nonce.
``id_token_claims`` changes what the ID tokens say; ``exchanges`` records each exchange.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import html
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from auth.oidc import OidcSettings

DEFAULT_AUDIENCE = "boardcast-web"
DEFAULT_CLIENT_SECRET = "local-issuer-client-secret"
CODE_TTL_SECONDS = 60.0


@dataclass
class _IssuedCode:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    username: str
    expires_at: float
    used: bool = False


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

    def __init__(
        self,
        *,
        audience: str = DEFAULT_AUDIENCE,
        path: str = "",
        host: str = "127.0.0.1",
        client_secret: str = DEFAULT_CLIENT_SECRET,
        redirect_uris: Iterable[str] = (),
    ) -> None:
        self.audience = audience
        self._path = path.rstrip("/")
        #: The name in its URL: ``localhost`` makes it another site than 127.0.0.1 to a
        #: browser (it always listens on 127.0.0.1).
        self.host = host
        #: The secret of the client ``audience`` ("": a public client, PKCE alone).
        self.client_secret = client_secret
        #: Callback URLs registered for the client; :attr:`redirect_uris` may grow later.
        self.redirect_uris: set[str] = set(redirect_uris)
        #: Claims replacing those of the ID tokens ``/token`` issues (a wrong nonce...).
        self.id_token_claims: dict[str, Any] = {}
        #: Every code exchange: ``(status answered, error or "")``.
        self.exchanges: list[tuple[int, str]] = []
        self._codes: dict[str, _IssuedCode] = {}
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
        app.router.add_get(self._path + "/authorize", self._authorize_form)
        app.router.add_post(self._path + "/authorize", self._authorize)
        app.router.add_post(self._path + "/token", self._token)
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
        return f"http://{self.host}:{self._port}{self._path}"

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

    # -- the authorization code flow

    def _authorization_error(self, query: Any) -> str | None:
        """Why an authorization request is refused (before any redirect), or None."""
        if query.get("client_id") != self.audience:
            return "unknown client_id"
        if query.get("redirect_uri") not in self.redirect_uris:
            return "redirect_uri is not registered for this client"
        if query.get("response_type") != "code":
            return "response_type must be code"
        if "openid" not in str(query.get("scope", "")).split():
            return "scope must include openid"
        if query.get("code_challenge_method") != "S256":
            return "code_challenge_method must be S256"
        if len(str(query.get("code_challenge", ""))) != 43:
            return "code_challenge is not an S256 challenge"
        if not query.get("state") or not query.get("nonce"):
            return "state and nonce are required"
        return None

    async def _authorize_form(self, request: web.Request) -> web.StreamResponse:
        self.requests["authorize"] += 1
        refused = self._authorization_error(request.query)
        if refused is not None:
            return web.Response(status=400, text=refused)
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in request.query.items()
        )
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Local ID</title></head><body><main><h1>Sign in to Local ID</h1>"
            f'<form method="post" action="{html.escape(self._path)}/authorize">{hidden}'
            '<label for="u">Username</label> <input id="u" name="username" required>'
            ' <button type="submit">Sign in</button></form></main></body></html>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        refused = self._authorization_error(form)
        username = str(form.get("username", "")).strip()
        if refused is not None or not username:
            return web.Response(status=400, text=refused or "a username is required")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _IssuedCode(
            client_id=str(form["client_id"]),
            redirect_uri=str(form["redirect_uri"]),
            challenge=str(form["code_challenge"]),
            nonce=str(form["nonce"]),
            username=username,
            expires_at=time.monotonic() + CODE_TTL_SECONDS,
        )
        back = {"code": code, "state": str(form["state"]), "iss": self.url}
        raise web.HTTPFound(f"{form['redirect_uri']}?{urlencode(back)}")

    def _client_of(self, request: web.Request, form: Any) -> str | None:
        """The authenticated client id of a token request (Basic or form), or None."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                pair = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return None
            # RFC 6749 2.3.1: each part is form-encoded before the Basic encoding.
            client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
        else:
            client_id = str(form.get("client_id", ""))
            secret = str(form.get("client_secret", ""))
        if client_id != self.audience or not hmac.compare_digest(secret, self.client_secret):
            return None
        return client_id

    def _token_error(self, status: int, error: str) -> web.Response:
        self.exchanges.append((status, error))
        return web.json_response({"error": error}, status=status)

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.requests["token"] += 1
        if self._failure_status is not None:
            return web.Response(status=self._failure_status)
        form = await request.post()
        if form.get("grant_type") != "authorization_code":
            return self._token_error(400, "unsupported_grant_type")
        client_id = self._client_of(request, form)
        if client_id is None:
            return self._token_error(401, "invalid_client")
        issued = self._codes.get(str(form.get("code", "")))
        if issued is None or issued.used or issued.expires_at < time.monotonic():
            return self._token_error(400, "invalid_grant")
        issued.used = True  # single use, even when the rest of the request is wrong
        verifier = str(form.get("code_verifier", ""))
        challenge = _base64url(hashlib.sha256(verifier.encode()).digest())
        if not hmac.compare_digest(challenge, issued.challenge):
            return self._token_error(400, "invalid_grant")
        if form.get("redirect_uri") != issued.redirect_uri or client_id != issued.client_id:
            return self._token_error(400, "invalid_grant")
        claims = self.claims(
            sub=f"local-{issued.username}",
            name=issued.username,
            email=f"{issued.username}@example.org",
            nonce=issued.nonce,
        )
        claims.update(self.id_token_claims)
        self.exchanges.append((200, ""))
        return web.json_response(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 600,
                "id_token": self.mint(claims),
            },
            headers={"Cache-Control": "no-store"},
        )
