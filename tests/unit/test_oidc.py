"""The OIDC verifier against a real local issuer: what it accepts, and every forgery it refuses.

Each test runs :class:`tests.oidc_issuer.LocalIssuer` on 127.0.0.1 port 0 and verifies
tokens it minted, counting the requests the verifier made to it. Time for the key cache
comes from a clock the test moves; token times (``exp``, ``nbf``, ``iat``) are real.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth.oidc import OidcSettings, OidcVerifier
from crdt.close_codes import CloseCode
from crdt.errors import BoardcastError, TokenRefused
from tests.oidc_issuer import LocalIssuer, SigningKey, mint_hmac, mint_unsigned


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer() as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def verifier(issuer: LocalIssuer, clock: FakeClock) -> AsyncIterator[OidcVerifier]:
    checker = OidcVerifier(issuer.settings(), clock=clock)
    yield checker
    await checker.close()


async def refused(verifier: OidcVerifier, token: str, **kwargs: Any) -> str:
    """The reason ``verifier`` refuses ``token`` (the test fails if it accepts it)."""
    with pytest.raises(TokenRefused) as caught:
        await verifier.verify(token, **kwargs)
    return caught.value.reason


# -- accepted


async def test_rs256_id_token_gives_the_identity(issuer: LocalIssuer, verifier: OidcVerifier):
    token = issuer.mint(sub="alice", email="alice@example.org", name="Alice")
    identity = await verifier.verify(token)
    assert identity.issuer == issuer.url
    assert identity.subject == "alice"
    assert identity.email == "alice@example.org"
    assert identity.email_verified is True
    assert identity.name == "Alice"
    assert abs(identity.expires_at.timestamp() - (time.time() + 600)) < 60
    assert issuer.requests == {"discovery": 1, "jwks": 1}
    assert issuer.paths == {"/.well-known/openid-configuration": 1, "/jwks": 1}


async def test_es256_token_and_access_token_are_accepted(
    issuer: LocalIssuer, verifier: OidcVerifier
):
    assert (await verifier.verify(issuer.mint(alg="ES256", sub="bob"))).subject == "bob"
    access = await verifier.verify(issuer.access_token(sub="carol", email_verified="false"))
    assert access.subject == "carol"
    assert access.email_verified is False
    # One discovery and one key set served all three tokens.
    assert issuer.requests == {"discovery": 1, "jwks": 1}


async def test_configured_jwks_url_skips_discovery(issuer: LocalIssuer, clock: FakeClock):
    checker = OidcVerifier(issuer.settings(jwks_url=issuer.jwks_url), clock=clock)
    try:
        assert (await checker.verify(issuer.mint())).subject == "user-1"
    finally:
        await checker.close()
    assert issuer.requests == {"jwks": 1}


async def test_issuer_with_a_path_and_a_shared_session():
    import aiohttp

    async with LocalIssuer(path="/realms/boardcast") as issuer, aiohttp.ClientSession() as http:
        checker = OidcVerifier(issuer.settings(), session=http)
        assert (await checker.verify(issuer.mint())).issuer.endswith("/realms/boardcast")
        await checker.close()
        assert not http.closed  # a session the caller gave stays the caller's


async def test_leeway_tolerates_small_clock_skew(issuer: LocalIssuer, verifier: OidcVerifier):
    now = int(time.time())
    assert await verifier.verify(issuer.mint(exp=now - 20, iat=now - 600))
    assert await verifier.verify(issuer.mint(nbf=now + 20, iat=now + 20))


# -- forged headers and algorithms


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(issuer: LocalIssuer, verifier: OidcVerifier, alg: str):
    token = mint_unsigned(issuer.claims(), {"alg": alg, "kid": issuer.key("RS256").kid})
    assert await refused(verifier, token) == "bad-algorithm"


@pytest.mark.parametrize("form", ["pem", "jwk", "jwk-sorted", "modulus"])
async def test_hs256_signed_with_the_issuers_public_key_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier, form: str
):
    public = issuer.key("RS256")
    secret = {
        "pem": public.public_pem(),
        "jwk": json.dumps(public.public_jwk()).encode(),
        "jwk-sorted": json.dumps(
            public.public_jwk(), sort_keys=True, separators=(",", ":")
        ).encode(),
        "modulus": base64.urlsafe_b64decode(public.public_jwk()["n"] + "=="),
    }[form]
    token = mint_hmac(issuer.claims(), secret, {"kid": public.kid})
    assert await refused(verifier, token) == "bad-algorithm"


@pytest.mark.parametrize("alg", ["RS384", "PS256", "ES512", "EdDSA", "HS512", "RSA-OAEP"])
async def test_algorithms_outside_the_allowlist_are_refused(
    issuer: LocalIssuer, verifier: OidcVerifier, alg: str
):
    # Signature bytes do not matter: the algorithm is refused before any key is used.
    token = mint_unsigned(issuer.claims(), {"alg": alg, "kid": issuer.key().kid})
    assert await refused(verifier, token + "c2ln") == "bad-algorithm"


async def test_token_signed_with_another_key_under_the_issuers_kid(
    issuer: LocalIssuer, verifier: OidcVerifier
):
    for alg in ("RS256", "ES256"):
        impostor = SigningKey.generate(alg, kid=issuer.key(alg).kid)
        assert await refused(verifier, issuer.mint(key=impostor)) == "bad-signature"


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
async def test_headers_naming_a_key_are_refused_and_never_fetched(
    issuer: LocalIssuer, verifier: OidcVerifier, header: str
):
    async with LocalIssuer() as attacker:
        own = attacker.key("RS256")
        value: Any = {
            "jku": attacker.jwks_url,
            "x5u": attacker.url + "/cert.pem",
            "jwk": own.public_jwk(),
            "x5c": [self_signed_certificate(own)],
        }[header]
        for kid in (own.kid, issuer.key("RS256").kid):
            token = issuer.mint(issuer.claims(), key=own, headers={header: value, "kid": kid})
            assert await refused(verifier, token) == "bad-header"
        assert sum(attacker.paths.values()) == 0  # nothing asked the attacker's server
        # The genuine issuer still works (nothing was poisoned).
        assert await verifier.verify(issuer.mint())


def self_signed_certificate(key: SigningKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key.private_key, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"crit": ["exp"]}, "bad-header"),
        ({"typ": "logout+jwt"}, "bad-header"),
        ({"kid": 7}, "bad-header"),
        ({"kid": "k" * 300}, "bad-header"),
    ],
)
async def test_other_bad_headers(
    issuer: LocalIssuer, verifier: OidcVerifier, headers: dict[str, Any], reason: str
):
    assert await refused(verifier, issuer.mint(headers=headers)) == reason


# -- forged claims


@pytest.mark.parametrize(
    ("claims", "omit", "reason"),
    [
        ({"iss": "https://evil.example"}, (), "wrong-issuer"),
        ({"iss": "http://127.0.0.1:1"}, (), "wrong-issuer"),
        ({"aud": "another-client"}, (), "wrong-audience"),
        ({"aud": ["another-client", "boardcast-web"]}, (), "wrong-audience"),  # no azp
        ({"azp": "another-client"}, (), "wrong-audience"),
        ({"exp": int(time.time()) - 3600}, (), "expired"),
        ({"nbf": int(time.time()) + 3600}, (), "not-yet-valid"),
        ({"iat": int(time.time()) + 3600}, (), "not-yet-valid"),
        ({}, ("sub",), "missing-claim"),
        ({"sub": ""}, (), "missing-claim"),
        ({"sub": 42}, (), "malformed"),
        ({}, ("exp",), "missing-claim"),
        ({}, ("iat",), "missing-claim"),
        ({}, ("aud",), "missing-claim"),
        ({"exp": "tomorrow"}, (), "malformed"),
        ({"exp": 10**30}, (), "malformed"),
    ],
)
async def test_forged_claims_are_refused(
    issuer: LocalIssuer,
    verifier: OidcVerifier,
    claims: dict[str, Any],
    omit: tuple[str, ...],
    reason: str,
):
    for alg in ("RS256", "ES256"):
        assert await refused(verifier, issuer.mint(alg=alg, omit=omit, **claims)) == reason


async def test_several_audiences_need_azp_naming_this_client(
    issuer: LocalIssuer, verifier: OidcVerifier
):
    token = issuer.mint(aud=["boardcast-web", "api"], azp="boardcast-web")
    assert (await verifier.verify(token)).subject == "user-1"


async def test_nonce_must_match_when_asked(issuer: LocalIssuer, verifier: OidcVerifier):
    token = issuer.mint(nonce="n-123")
    assert await verifier.verify(token, nonce="n-123")
    assert await refused(verifier, token, nonce="n-456") == "wrong-nonce"
    assert await refused(verifier, issuer.mint(), nonce="n-123") == "wrong-nonce"


async def test_oversized_and_malformed_tokens(issuer: LocalIssuer, verifier: OidcVerifier):
    big = issuer.mint(name="x" * 20000)
    assert await refused(verifier, big) == "too-large"
    for junk in ("", "a.b", "a.b.c.d", "é.é.é", ".....", "W10.e30.x", "e30"):
        assert await refused(verifier, junk) == "malformed"
    assert await refused(verifier, "e30.e30.") == "bad-algorithm"  # header {}
    assert sum(issuer.requests.values()) == 0  # junk costs the issuer nothing
    for damaged in (issuer.mint() + "x", issuer.mint().replace(".", ".!", 1)):
        assert await refused(verifier, damaged) == "malformed"


# -- keys: unknown kids, rollover, refetch bound, key fitness


async def test_unknown_kid_refetches_once_then_is_refused(
    issuer: LocalIssuer, verifier: OidcVerifier, clock: FakeClock
):
    await verifier.verify(issuer.mint())
    clock.advance(verifier.settings.min_refetch_seconds)
    stranger = SigningKey.generate("RS256")
    assert await refused(verifier, issuer.mint(key=stranger)) == "unknown-key"
    assert issuer.requests["jwks"] == 2


async def test_key_rollover(issuer: LocalIssuer, verifier: OidcVerifier, clock: FakeClock):
    old_token = issuer.mint()
    await verifier.verify(old_token)
    issuer.rotate()
    new_tokens = [issuer.mint(), issuer.mint(alg="ES256")]
    clock.advance(verifier.settings.min_refetch_seconds)
    for token in new_tokens:
        assert await verifier.verify(token)
    assert issuer.requests["jwks"] == 2  # one refetch brought both new keys
    # The old key left the issuer's JWKS, so it left ours with that refetch.
    assert await refused(verifier, old_token) == "unknown-key"


async def test_rollover_with_the_old_key_still_published(
    issuer: LocalIssuer, verifier: OidcVerifier, clock: FakeClock
):
    old_token = issuer.mint()
    await verifier.verify(old_token)
    issuer.rotate(["RS256"], keep_old=True)
    clock.advance(verifier.settings.min_refetch_seconds)
    assert await verifier.verify(issuer.mint())
    assert await verifier.verify(old_token)
    assert issuer.requests["jwks"] == 2


async def test_flood_of_random_kids_makes_a_bounded_number_of_fetches(
    issuer: LocalIssuer, verifier: OidcVerifier, clock: FakeClock
):
    stranger = SigningKey.generate("ES256")
    await verifier.verify(issuer.mint())
    window = verifier.settings.min_refetch_seconds

    def random_kid_token() -> str:
        return issuer.mint(key=stranger, headers={"kid": secrets.token_hex(8)})

    clock.advance(window)
    # 200 at once: one refetch between them all.
    reasons = await asyncio.gather(*(refused(verifier, random_kid_token()) for _ in range(200)))
    assert set(reasons) == {"unknown-key"}
    assert issuer.requests["jwks"] == 2
    # Ten simulated minutes with a random kid every second.
    for _ in range(600):
        clock.advance(1)
        assert await refused(verifier, random_kid_token()) == "unknown-key"
    assert issuer.requests["jwks"] <= 2 + 600 / window  # one fetch per window
    assert issuer.requests["discovery"] == 1
    assert await verifier.verify(issuer.mint())  # and real tokens still pass


async def test_key_set_is_fetched_again_when_its_cache_time_is_over(
    issuer: LocalIssuer, verifier: OidcVerifier, clock: FakeClock
):
    await verifier.verify(issuer.mint())
    clock.advance(verifier.settings.jwks_cache_seconds - 1)
    await verifier.verify(issuer.mint())
    assert issuer.requests["jwks"] == 1
    clock.advance(1)
    await verifier.verify(issuer.mint())
    assert issuer.requests["jwks"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"alg": "ES256"},  # an RSA key claiming an EC algorithm
        {"use": "enc"},
        {"key_ops": ["encrypt"]},
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC"},
        {"d": "cHJpdmF0ZQ"},  # private material published: the key is not trusted
        {"n": base64.urlsafe_b64encode(b"\xc1" * 128).rstrip(b"=").decode()},  # 1024-bit
        {"e": "AQAAAAAB"},  # exponent over 2**32
    ],
)
async def test_keys_that_do_not_fit_are_not_used(
    issuer: LocalIssuer, verifier: OidcVerifier, change: dict[str, str]
):
    jwk = issuer.key("RS256").public_jwk() | change
    issuer.serve_jwks({"keys": [jwk, issuer.key("ES256").public_jwk()]})
    assert await refused(verifier, issuer.mint()) == "unknown-key"
    assert await verifier.verify(issuer.mint(alg="ES256"))  # the fitting key still serves


async def test_kid_for_another_algorithm_is_refused(issuer: LocalIssuer, verifier: OidcVerifier):
    rsa_kid = issuer.key("RS256").kid
    token = issuer.mint(alg="ES256", headers={"kid": rsa_kid})
    assert await refused(verifier, token) == "unknown-key"


async def test_token_without_kid_uses_the_single_fitting_key(
    issuer: LocalIssuer, verifier: OidcVerifier
):
    assert await verifier.verify(issuer.mint(headers={"kid": None}))
    issuer.rotate(["RS256"], keep_old=True)  # two RSA keys: a kid-less token is ambiguous
    fresh = OidcVerifier(issuer.settings())
    try:
        assert await refused(fresh, issuer.mint(headers={"kid": None})) == "unknown-key"
    finally:
        await fresh.close()


# -- the issuer misbehaving


async def test_issuer_down_means_issuer_unavailable(issuer: LocalIssuer, clock: FakeClock):
    await issuer.stop()
    checker = OidcVerifier(issuer.settings(), clock=clock)
    try:
        with pytest.raises(TokenRefused) as caught:
            await checker.verify(issuer.mint())
        assert caught.value.reason == "issuer-unavailable"
        assert caught.value.close_code == CloseCode.TRY_AGAIN_LATER
        assert isinstance(caught.value, BoardcastError)
    finally:
        await checker.close()


@pytest.mark.parametrize("status", [500, 503, 404, 302])
async def test_issuer_error_answers_mean_issuer_unavailable(
    issuer: LocalIssuer, verifier: OidcVerifier, clock: FakeClock, status: int
):
    issuer.fail_with(status)
    assert await refused(verifier, issuer.mint()) == "issuer-unavailable"
    # Within the refetch bound the next tokens do not reach the issuer at all.
    for _ in range(20):
        assert await refused(verifier, issuer.mint()) == "issuer-unavailable"
    assert issuer.requests["discovery"] == 1
    issuer.fail_with(None)
    clock.advance(verifier.settings.min_refetch_seconds)
    assert await verifier.verify(issuer.mint())


async def test_cached_keys_outlive_an_issuer_outage_up_to_the_stale_limit(
    issuer: LocalIssuer, clock: FakeClock
):
    checker = OidcVerifier(
        issuer.settings(jwks_cache_seconds=100, jwks_max_stale_seconds=1000), clock=clock
    )
    try:
        await checker.verify(issuer.mint())
        issuer.fail_with(503)
        clock.advance(500)  # expired, refresh fails: the old keys still verify
        assert await checker.verify(issuer.mint())
        assert issuer.requests["jwks"] == 2
        clock.advance(600)  # past cache time + stale allowance
        assert await refused(checker, issuer.mint()) == "issuer-unavailable"
    finally:
        await checker.close()


async def test_issuer_that_never_answers_times_out(issuer: LocalIssuer):
    hanging: list[asyncio.StreamWriter] = []

    async def accept_and_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        hanging.append(writer)

    server = await asyncio.start_server(accept_and_wait, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    checker = OidcVerifier(
        issuer.settings(jwks_url=f"http://127.0.0.1:{port}/jwks", http_timeout_seconds=0.3)
    )
    try:
        assert await refused(checker, issuer.mint()) == "issuer-unavailable"
    finally:
        await checker.close()
        for writer in hanging:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "document",
    [
        b"x" * 200_000,  # over max_document_bytes
        json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}] * 33}).encode(),
        b"not json",
        b'{"keys": {"kty": "RSA"}}',
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" * 1000,
    ],
)
async def test_unusable_jwks_documents_mean_issuer_unavailable(
    issuer: LocalIssuer, verifier: OidcVerifier, document: bytes
):
    issuer.serve_jwks(document)
    assert await refused(verifier, issuer.mint()) == "issuer-unavailable"


@pytest.mark.parametrize(
    "change",
    [
        {"issuer": "https://evil.example"},
        {"jwks_uri": "http://203.0.113.9/jwks"},  # plain http off loopback: never fetched
        {"jwks_uri": 42},
    ],
)
async def test_discovery_documents_that_are_not_trusted(
    issuer: LocalIssuer, verifier: OidcVerifier, change: dict[str, Any]
):
    issuer.discovery_overrides = change
    assert await refused(verifier, issuer.mint()) == "issuer-unavailable"
    assert issuer.requests == {"discovery": 1}


async def test_issuer_spelled_differently_from_its_discovery_is_not_trusted(
    issuer: LocalIssuer,
):
    # A trailing slash is another issuer identifier: exact match only (Discovery 4.3).
    checker = OidcVerifier(issuer.settings(issuer=issuer.url + "/"))
    try:
        assert await refused(checker, issuer.mint()) == "issuer-unavailable"
    finally:
        await checker.close()


def test_settings_refuse_unsafe_configurations():
    with pytest.raises(ValueError, match="HS256"):
        OidcSettings(issuer="https://id.example", audience="a", algorithms=("RS256", "HS256"))
    with pytest.raises(ValueError, match="none"):
        OidcSettings(issuer="https://id.example", audience="a", algorithms=("none",))
    with pytest.raises(ValueError, match="https"):
        OidcSettings(issuer="http://id.example", audience="a")
    with pytest.raises(ValueError, match="https"):
        OidcSettings(issuer="https://id.example", audience="a", jwks_url="http://10.0.0.1/k")
    with pytest.raises(ValueError, match="audience"):
        OidcSettings(issuer="https://id.example", audience="")
    assert OidcSettings(issuer="http://localhost:8080", audience="a").algorithms == (
        "RS256",
        "ES256",
    )


# -- fuzzing: hostile tokens and hostile key sets


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer() as running:
        yield running


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def hostile_tokens(draw: st.DrawFn, genuine: str) -> str:
    kind = draw(st.sampled_from(["text", "segments", "mutation", "header"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "segments":
        parts = [
            b64(json.dumps(draw(json_values)).encode()),
            b64(json.dumps(draw(json_values)).encode()),
            b64(draw(st.binary(max_size=300))),
        ]
        return ".".join(parts)
    if kind == "header":
        header = draw(st.dictionaries(st.sampled_from(HEADER_NAMES), json_values, max_size=5))
        _, payload, signature = genuine.split(".")
        return ".".join([b64(json.dumps(header).encode()), payload, signature])
    position = draw(st.integers(0, len(genuine) - 1))
    replacement = draw(st.characters(codec="ascii").filter(lambda c: c != genuine[position]))
    return genuine[:position] + replacement + genuine[position + 1 :]


HEADER_NAMES = ["alg", "kid", "typ", "jku", "jwk", "x5u", "x5c", "crit", "b64", "cty", "zip"]


@pytest.mark.asyncio(loop_scope="module")
@FUZZ
@given(data=st.data())
async def test_fuzzed_tokens_are_always_refused(shared_issuer: LocalIssuer, data: st.DataObject):
    shared_issuer.serve_jwks(None)
    genuine = shared_issuer.mint(alg=data.draw(st.sampled_from(["RS256", "ES256"])))
    token = data.draw(hostile_tokens(genuine))
    checker = OidcVerifier(shared_issuer.settings())
    try:
        with pytest.raises(TokenRefused):
            await checker.verify(token)
    finally:
        await checker.close()


@st.composite
def hostile_key_sets(draw: st.DrawFn, kid: str, foreign: list[dict[str, Any]]) -> bytes:
    """JWKS documents that never hold the issuer's real public key."""
    kind = draw(st.sampled_from(["bytes", "json", "keys"]))
    if kind == "bytes":
        return draw(st.binary(max_size=500))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    member = st.one_of(
        st.sampled_from([value for jwk in foreign for value in jwk.values()]),
        json_values,
        st.binary(max_size=64).map(b64),
    )
    names = ["kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "y", "d", "k", "x5c"]
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        base = dict(draw(st.sampled_from(foreign)))
        base["kid"] = draw(st.sampled_from([kid, base["kid"]]))
        overrides = draw(st.dictionaries(st.sampled_from(names), member, max_size=4))
        entries.append(base | overrides)
        if draw(st.booleans()):
            entries.append(draw(json_values))
    return json.dumps({"keys": entries}).encode()


FOREIGN_KEYS = [SigningKey.generate("RS256"), SigningKey.generate("ES256")]


@pytest.mark.asyncio(loop_scope="module")
@FUZZ
@given(data=st.data())
async def test_fuzzed_key_sets_never_verify_and_never_crash(
    shared_issuer: LocalIssuer, data: st.DataObject
):
    alg = data.draw(st.sampled_from(["RS256", "ES256"]))
    kid = shared_issuer.key(alg).kid
    foreign = [key.public_jwk() for key in FOREIGN_KEYS]
    shared_issuer.serve_jwks(data.draw(hostile_key_sets(kid, foreign)))
    checker = OidcVerifier(shared_issuer.settings())
    try:
        with pytest.raises(TokenRefused):
            await checker.verify(shared_issuer.mint(alg=alg))
    finally:
        await checker.close()
        shared_issuer.serve_jwks(None)


@pytest.mark.asyncio(loop_scope="module")
@FUZZ
@given(junk=st.lists(json_values, max_size=6))
async def test_junk_entries_beside_the_real_key_do_not_stop_it(
    shared_issuer: LocalIssuer, junk: list[Any]
):
    real = shared_issuer.key("RS256").public_jwk()
    shared_issuer.serve_jwks({"keys": [*junk, real]})
    checker = OidcVerifier(shared_issuer.settings())
    try:
        assert await checker.verify(shared_issuer.mint())
    finally:
        await checker.close()
        shared_issuer.serve_jwks(None)
