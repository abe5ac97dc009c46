"""The code flow's pure parts (auth/oidc_flow.py): PKCE, callbacks, return paths, bounds."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth import oidc_flow
from auth.oidc_flow import (
    CodeFlowSettings,
    PendingLogin,
    PendingLogins,
    SignInRefused,
    check_pending,
    read_callback,
    safe_return_path,
)

ISSUER = "https://id.example.com"
FLOW = CodeFlowSettings(client_id="boardcast", client_secret="s3cret:with/odd+chars")


def _login(**overrides: object) -> PendingLogin:
    login = oidc_flow.start_login(
        redirect_uri="https://boards.example.com/v1/auth/oidc/callback",
        return_to="/#/b/plans",
        browser_secret="b" * 43,
        now=1000.0,
    )
    return PendingLogin(**(login.to_record() | overrides))  # type: ignore[arg-type]


def test_the_challenge_is_the_rfc_7636_s256_of_the_verifier() -> None:
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oidc_flow.code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_authorization_url_carries_state_nonce_and_an_s256_challenge() -> None:
    login = _login()
    url = oidc_flow.authorization_url(ISSUER + "/auth?realm=x", FLOW, login)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["realm"] == "x"
    assert query["state"] == login.state and query["nonce"] == login.nonce
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(login.code_verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert login.code_verifier not in url
    assert query["scope"] == "openid email profile"
    assert query["response_type"] == "code"


def test_every_login_has_fresh_unguessable_values() -> None:
    logins = [_login() for _ in range(50)]
    for name in ("state", "nonce", "code_verifier"):
        values = {getattr(login, name) for login in logins}
        assert len(values) == 50
        assert all(oidc_flow.STATE_PATTERN.fullmatch(value) for value in values)


def test_the_client_secret_goes_in_basic_auth_form_encoded_and_never_in_the_form() -> None:
    login = _login()
    form, headers = oidc_flow.token_request(FLOW, login, "the-code")
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": login.redirect_uri,
        "code_verifier": login.code_verifier,
    }
    pair = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert pair == "boardcast:s3cret%3Awith%2Fodd%2Bchars"
    public, no_headers = oidc_flow.token_request(CodeFlowSettings(client_id="web"), login, "c")
    assert public["client_id"] == "web" and no_headers == {}


def test_the_secret_is_not_in_the_settings_repr() -> None:
    assert "s3cret" not in repr(FLOW)
    from gateway.settings import Settings

    settings = Settings(oidc_client_secret="hush-hush")
    assert "hush-hush" not in repr(settings)


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        "/ok\nSet-Cookie: x=1",
        "/\tx",
        "/" + "a" * 3000,
    ],
)
def test_return_paths_that_leave_the_site_are_refused(target: str) -> None:
    with pytest.raises(SignInRefused) as refused:
        safe_return_path(target)
    assert refused.value.reason == "bad-callback"


def test_paths_of_this_site_are_kept() -> None:
    assert safe_return_path(None) == "/"
    assert safe_return_path("") == "/"
    assert safe_return_path("/#/b/plans") == "/#/b/plans"
    assert safe_return_path("/?x=1#/b/a%20b") == "/?x=1#/b/a%20b"


@given(st.text(max_size=300))
def test_any_return_path_accepted_stays_on_this_site(value: str) -> None:
    try:
        path = safe_return_path(value)
    except SignInRefused:
        return
    parts = urlsplit(path)
    assert path.startswith("/") and not path.startswith("//")
    assert not parts.scheme and not parts.netloc
    assert "\\" not in path and all(ord(char) > 0x20 and ord(char) != 0x7F for char in path)


_KEYS = st.sampled_from(["code", "state", "iss", "error", "session_state", "scope"])


@given(st.dictionaries(_KEYS, st.text(max_size=4000)))
def test_any_callback_query_is_a_checked_callback_or_a_refusal(query: dict[str, str]) -> None:
    try:
        answer = read_callback(query, issuer=ISSUER, max_code_chars=2048)
    except SignInRefused as refused:
        assert refused.reason in {"unknown-state", "bad-callback"}
        return
    assert oidc_flow.STATE_PATTERN.fullmatch(answer.state)
    assert query.get("iss", ISSUER) == ISSUER
    if answer.code is None:
        assert answer.error is not None and len(answer.error) <= 64
    else:
        assert 0 < len(answer.code) <= 2048 and answer.code.isascii()
        assert " " not in answer.code


def test_a_callback_names_its_issuer_or_none_and_bounds_its_code() -> None:
    state = "S" * 43
    assert read_callback({"state": state, "code": "c"}, issuer=ISSUER, max_code_chars=8).code == "c"
    for query in [
        {"state": state, "code": "c", "iss": "https://evil.example"},
        {"state": state, "code": "c" * 9},
        {"state": state, "code": ""},
        {"state": state, "code": "a b"},
        {"state": state, "error": "<script>"},
    ]:
        with pytest.raises(SignInRefused) as refused:
            read_callback(query, issuer=ISSUER, max_code_chars=8)
        assert refused.value.reason == "bad-callback", query
    with pytest.raises(SignInRefused) as refused:
        read_callback({"state": "short", "code": "c"}, issuer=ISSUER, max_code_chars=8)
    assert refused.value.reason == "unknown-state"


def test_a_late_callback_or_one_from_another_browser_is_refused() -> None:
    login = _login()
    check_pending(login, browser_secret="b" * 43, now=1000.0 + 600, ttl_seconds=600)
    with pytest.raises(SignInRefused, match="expired-state"):
        check_pending(login, browser_secret="b" * 43, now=1000.0 + 600.5, ttl_seconds=600)
    for other in [None, "c" * 43, ""]:
        with pytest.raises(SignInRefused, match="other-browser"):
            check_pending(login, browser_secret=other, now=1001.0, ttl_seconds=600)


def test_a_stored_login_survives_its_record_and_a_broken_one_is_unknown() -> None:
    login = _login()
    assert PendingLogin.from_record(login.to_record()) == login
    for broken in [{}, {"state": 1}, login.to_record() | {"nonce": 5}]:
        with pytest.raises(SignInRefused, match="unknown-state"):
            PendingLogin.from_record(broken)


def test_the_token_answer_must_be_a_200_with_an_id_token() -> None:
    assert oidc_flow.id_token_of(200, {"id_token": "a.b.c"}) == "a.b.c"
    for status, body in [(400, {"error": "invalid_grant"}), (200, {}), (200, None), (401, "x")]:
        with pytest.raises(SignInRefused, match="code-refused"):
            oidc_flow.id_token_of(status, body)


def test_pending_sign_ins_are_bounded_and_free_up_as_they_expire() -> None:
    pending = PendingLogins(limit=2, ttl_seconds=10)
    assert pending.admit(0.0) and pending.admit(1.0)
    assert not pending.admit(5.0)
    assert pending.admit(10.0)  # the first one's time is over
    assert len(pending) == 2


def test_settings_refuse_a_flow_without_openid_or_with_a_bad_redirect() -> None:
    with pytest.raises(ValueError, match="openid"):
        CodeFlowSettings(client_id="x", scopes=("email",))
    with pytest.raises(ValueError, match="redirect_uri"):
        CodeFlowSettings(client_id="x", redirect_uri="/relative")
    with pytest.raises(ValueError, match="client id"):
        CodeFlowSettings(client_id="")
