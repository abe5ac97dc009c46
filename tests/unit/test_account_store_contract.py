"""The contract every account store passes: the SQLite file and MongoDB (on SecantusDB).

To cover another store, add a function opening it to ``STORES``. The MongoDB store runs
against SecantusDB (or ``BOARDCAST_TEST_MONGO_URL``): see ``tests/persistence_servers.py``;
under ``CI=true`` a missing server fails these tests instead of skipping them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth.accounts import ACCOUNTS_FILENAME, AccountError, Accounts, AccountStore, ApiToken
from auth.mongo_accounts import MongoAccountsSettings, MongoAccountStore
from persistence.keyring import KeyRing
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

Opener = Callable[..., Accounts]


def sqlite_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    path = str(tmp_path / ACCOUNTS_FILENAME)
    return lambda **options: AccountStore(path, **options)


def mongo_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    url = str(request.getfixturevalue("mongo_url"))
    return lambda **options: MongoAccountStore(url, **options)


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "sqlite": sqlite_opener,
    "mongo": mongo_opener,
}


@pytest.fixture(params=sorted(STORES))
def open_accounts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the store under test; every store opened is closed after the test."""
    opened: list[Accounts] = []
    opener = STORES[request.param](request, tmp_path)

    def open_one(**options: object) -> Accounts:
        store = opener(**options)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def accounts(open_accounts: Opener) -> Accounts:
    return open_accounts()


def _user(accounts: Accounts, name: str = "Olivia") -> str:
    user_id = uuid.uuid4().hex
    accounts.add_user(user_id, name, password_hash="hash", email=f"{name}@example.org")
    return user_id


# -- users -----------------------------------------------------------------------------


def test_names_are_unique_whatever_their_case(accounts: Accounts) -> None:
    user_id = _user(accounts, "Olivia")
    with pytest.raises(AccountError):
        accounts.add_user("another", "OLIVIA", password_hash=None)
    found = accounts.find_user("olivia")
    assert found is not None and found.id == user_id and found.name == "Olivia"
    assert found.email == "Olivia@example.org" and not found.admin and not found.mfa
    assert accounts.count_users() == 1


def test_names_outside_the_bounds_are_refused(accounts: Accounts) -> None:
    for name in ("", "x" * 65, "tab\there"):
        with pytest.raises(AccountError):
            accounts.add_user(uuid.uuid4().hex, name, password_hash=None)
    assert accounts.count_users() == 0


def test_users_are_listed_by_name_and_changes_stick(accounts: Accounts) -> None:
    for name in ("cora", "Bob", "alice"):
        _user(accounts, name)
    assert [user.name for user in accounts.users()] == ["alice", "Bob", "cora"]
    bob = accounts.find_user("bob")
    assert bob is not None
    accounts.set_password(bob.id, "new-hash")
    accounts.set_admin(bob.id, True)
    accounts.set_disabled(bob.id, True)
    again = accounts.get_user(bob.id)
    assert again is not None and again.password_hash == "new-hash"
    assert again.admin and again.disabled
    assert accounts.get_user("nobody") is None and accounts.find_user("nobody") is None


def test_an_external_identity_links_one_user(accounts: Accounts) -> None:
    linked = accounts.add_user(
        "u1", "ext", password_hash=None, external=("https://id.example", "sub-1")
    )
    accounts.add_user("u2", "plain-1", password_hash=None)
    accounts.add_user("u3", "plain-2", password_hash=None)
    found = accounts.find_external("https://id.example", "sub-1")
    assert found is not None and found.id == linked.id
    assert accounts.find_external("https://id.example", "sub-2") is None
    with pytest.raises(AccountError):
        accounts.add_user(
            "u4", "ext-again", password_hash=None, external=("https://id.example", "sub-1")
        )


def test_totp_steps_only_go_forward(accounts: Accounts) -> None:
    user_id = _user(accounts)
    accounts.set_totp(user_id, "JBSWY3DPEHPK3PXP")
    user = accounts.get_user(user_id)
    assert user is not None and user.mfa and user.totp_secret == "JBSWY3DPEHPK3PXP"
    assert accounts.use_totp_step(user_id, 100)
    assert not accounts.use_totp_step(user_id, 100)
    assert not accounts.use_totp_step(user_id, 99)
    assert accounts.use_totp_step(user_id, 101)
    accounts.set_totp(user_id, None)
    user = accounts.get_user(user_id)
    assert user is not None and not user.mfa and user.totp_last_step == 0


# -- families, refresh tokens, revocation ---------------------------------------------


def test_revoking_a_family_announces_it_once(accounts: Accounts) -> None:
    user_id = _user(accounts)
    accounts.add_family("f1", user_id, ("pwd", "otp"))
    family = accounts.get_family("f1")
    assert family is not None and family.amr == ("pwd", "otp") and family.revoked_at is None
    before = accounts.last_revocation()
    assert accounts.revoke_family("f1", "logout") == user_id
    assert accounts.revoke_family("f1", "logout") == user_id
    assert accounts.revoke_family("missing", "logout") is None
    feed = accounts.revocations_after(before)
    assert [(entry.user_id, entry.kind) for entry in feed] == [(user_id, "logout")]
    revoked = accounts.get_family("f1")
    assert revoked is not None and revoked.revoked_at is not None


def test_revoking_other_sessions_keeps_the_current_one(accounts: Accounts) -> None:
    user_id = _user(accounts)
    for family in ("a", "b", "c"):
        accounts.add_family(family, user_id, ("pwd",))
    accounts.revoke_sessions(user_id, "password-changed", keep="b")
    states = {f: accounts.get_family(f) for f in ("a", "b", "c")}
    assert {f: s is not None and s.revoked_at is not None for f, s in states.items()} == {
        "a": True,
        "b": False,
        "c": True,
    }
    accounts.revoke_sessions(user_id, "disabled")
    kept = accounts.get_family("b")
    assert kept is not None and kept.revoked_at is not None
    kinds = [entry.kind for entry in accounts.revocations_after(0)]
    assert kinds == ["password-changed", "disabled"]


def test_refresh_rotation_ok_then_grace_then_reused(accounts: Accounts) -> None:
    user_id = _user(accounts)
    accounts.add_family("f", user_id, ("pwd",))
    later = time.time() + 3600
    accounts.add_refresh("h0", "f", later)
    assert accounts.family_of_refresh("h0") == "f"
    outcome, record = accounts.rotate_refresh("h0", "h1", expires_at=later, grace_seconds=10)
    assert outcome == "ok" and record is not None and record.family_id == "f"
    assert record.rotated_at is None
    assert accounts.family_of_refresh("h1") == "f"
    # Two tabs refreshing at once: the second use of h0 is still within the window.
    outcome, record = accounts.rotate_refresh("h0", "h2", expires_at=later, grace_seconds=10)
    assert outcome == "ok" and record is not None and record.rotated_at is not None
    # With no window, the same spent token is a reuse.
    outcome, record = accounts.rotate_refresh("h0", "h3", expires_at=later, grace_seconds=-1)
    assert outcome == "reused" and record is not None and record.family_id == "f"
    assert accounts.family_of_refresh("h3") is None
    assert accounts.rotate_refresh("nope", "h4", expires_at=later, grace_seconds=10) == (
        "unknown",
        None,
    )


def test_one_token_rotated_from_eight_threads_is_spent_once(open_accounts: Opener) -> None:
    setup = open_accounts()
    user_id = _user(setup)
    setup.add_family("f", user_id, ("pwd",))
    later = time.time() + 3600
    setup.add_refresh("h0", "f", later)
    # Each thread has a store of its own, as gateways on separate machines would.
    stores = [open_accounts() for _ in range(8)]
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def rotate(index: int) -> None:
        start.wait(timeout=30)
        outcome, _ = stores[index].rotate_refresh(
            "h0", f"next-{index}", expires_at=later, grace_seconds=-1
        )
        outcomes.append(outcome)

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["ok"] + ["reused"] * 7
    successors = [f"next-{i}" for i in range(8) if setup.family_of_refresh(f"next-{i}")]
    assert len(successors) == 1


# -- codes, API tokens, signing keys ----------------------------------------------------


def test_a_code_is_spent_once_and_not_after_it_expires(accounts: Accounts) -> None:
    user_id = _user(accounts)
    accounts.add_code("c1", "ticket", user_id, "board-1", ttl=60)
    assert accounts.use_code("c1", "login-link") is None
    assert accounts.use_code("c1", "ticket") == (user_id, "board-1")
    assert accounts.use_code("c1", "ticket") is None
    accounts.add_code("c2", "ticket", user_id, "board-1", ttl=-1)
    assert accounts.use_code("c2", "ticket") is None
    assert accounts.use_code("never", "ticket") is None


def test_codes_are_spent_once_from_many_threads(open_accounts: Opener) -> None:
    setup = open_accounts()
    setup.add_code("c", "ticket", "u", "board", ttl=60)
    stores = [open_accounts() for _ in range(8)]
    start = threading.Barrier(len(stores))
    won: list[object] = []

    def spend(index: int) -> None:
        start.wait(timeout=30)
        won.append(stores[index].use_code("c", "ticket"))

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(repr, won)) == sorted([repr(("u", "board"))] + [repr(None)] * 7)


def test_api_tokens_are_stored_and_revoked_once(accounts: Accounts) -> None:
    user_id = _user(accounts)
    token = ApiToken(
        "t1", user_id, {"board": "b1", "role": "viewer"}, time.time(), None, None, "ci"
    )
    accounts.add_api_token(token)
    assert accounts.get_api_token("t1") == token
    before = accounts.last_revocation()
    assert accounts.revoke_api_token("t1") == user_id
    assert accounts.revoke_api_token("t1") is None
    assert accounts.revoke_api_token("missing") is None
    revoked = accounts.get_api_token("t1")
    assert revoked is not None and revoked.revoked_at is not None
    assert [e.kind for e in accounts.revocations_after(before)] == ["token-revoked"]


def test_signing_keys_round_trip_through_the_cipher(open_accounts: Opener, tmp_path: Path) -> None:
    ring = KeyRing.open(str(tmp_path / "keys" / "at-rest.json"))
    accounts = open_accounts(cipher=ring)
    accounts.add_signing_key("k1", b"first private key")
    time.sleep(0.01)  # two keys a clock tick apart, so "oldest first" has an order
    accounts.add_signing_key("k2", b"second private key")
    accounts.retire_signing_key("k1")
    keys = accounts.signing_keys()
    assert [(kid, pem) for kid, pem, _c, _r in keys] == [
        ("k1", b"first private key"),
        ("k2", b"second private key"),
    ]
    assert keys[0][3] is not None and keys[1][3] is None
    user_id = uuid.uuid4().hex
    accounts.add_user(user_id, "sealed", password_hash=None, email="s@example.org")
    accounts.set_totp(user_id, "SECRET")
    user = accounts.get_user(user_id)
    assert user is not None and user.email == "s@example.org" and user.totp_secret == "SECRET"
    # Without the key ring, what is stored is not the plaintext.
    plain = open_accounts()
    assert b"first private key" not in plain.signing_keys()[0][1]


# -- the feed and the audit log -------------------------------------------------------


def test_the_feed_is_in_order_and_pages(accounts: Accounts) -> None:
    assert accounts.last_revocation() == 0 and accounts.revocations_after(0) == []
    for index in range(5):
        accounts.announce(f"user-{index}", "role-changed")
    feed = accounts.revocations_after(0)
    assert [entry.user_id for entry in feed] == [f"user-{i}" for i in range(5)]
    seqs = [entry.seq for entry in feed]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert accounts.last_revocation() == seqs[-1]
    assert [e.user_id for e in accounts.revocations_after(seqs[1], limit=2)] == [
        "user-2",
        "user-3",
    ]
    assert accounts.revocations_after(seqs[-1]) == []


def test_the_audit_log_pages_newest_first(accounts: Accounts) -> None:
    for index in range(7):
        accounts.audit("login", f"user-{index}", ip="127.0.0.1", n=index)
    first = accounts.audit_log(limit=3)
    assert [entry.detail["n"] for entry in first] == [6, 5, 4]
    assert first[0].kind == "login" and first[0].user_id == "user-6"
    rest = accounts.audit_log(before=first[-1].seq, limit=10)
    assert [entry.detail["n"] for entry in rest] == [3, 2, 1, 0]
    assert accounts.audit_log(before=rest[-1].seq) == []


def test_two_stores_on_one_place_see_each_other(open_accounts: Opener) -> None:
    one, two = open_accounts(), open_accounts()
    user_id = _user(one, "shared")
    found = two.find_user("SHARED")
    assert found is not None and found.id == user_id
    one.announce(user_id, "logout")
    assert [entry.user_id for entry in two.revocations_after(0)] == [user_id]


# -- MongoDB only: the feed's numbers are taken before their entries are written ----------


def test_the_mongodb_feed_waits_for_a_number_taken_but_not_yet_written(
    mongo_url: str,  # noqa: F811 - the fixture
) -> None:
    patient = MongoAccountStore(mongo_url, settings=MongoAccountsSettings(feed_gap_seconds=3600))
    hasty = MongoAccountStore(mongo_url, settings=MongoAccountsSettings(feed_gap_seconds=0))
    try:
        patient.announce("first", "logout")
        # A writer elsewhere has taken the next number and not yet inserted its entry.
        taken = patient._next_seq("revocations")
        patient.announce("third", "logout")
        # A poller that read "third" now would step past the missing entry for good.
        assert [e.user_id for e in patient.revocations_after(0)] == ["first"]
        # Once the gap outlasts feed_gap_seconds, the writer is taken to have died.
        assert [e.user_id for e in hasty.revocations_after(0)] == ["first", "third"]
        assert taken not in [e.seq for e in hasty.revocations_after(0)]
    finally:
        patient.close()
        hasty.close()


# -- hostile lookups: what a client sends never selects an account it does not name ------

_HOSTILE_VALUES = st.one_of(
    st.text(max_size=80),
    st.dictionaries(st.sampled_from(["$ne", "$gt", "$regex", "$exists"]), st.text(max_size=4)),
    st.lists(st.text(max_size=4), max_size=3),
    st.integers(),
    st.none(),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_HOSTILE_VALUES)
def test_hostile_lookups_find_nothing(accounts: Accounts, value: object) -> None:
    if accounts.count_users() == 0:
        _user(accounts, "victim")
        accounts.add_family("victim-family", "victim-id", ("pwd",))
        accounts.add_refresh("victim-refresh", "victim-family", time.time() + 60)
        accounts.add_code("victim-code", "ticket", "victim-id", "board", ttl=60)
    lookups: list[Callable[[], object]] = [
        lambda: accounts.find_user(value),  # type: ignore[arg-type]
        lambda: accounts.get_user(value),  # type: ignore[arg-type]
        lambda: accounts.get_family(value),  # type: ignore[arg-type]
        lambda: accounts.family_of_refresh(value),  # type: ignore[arg-type]
        lambda: accounts.use_code(value, "ticket"),  # type: ignore[arg-type]
        lambda: accounts.get_api_token(value),  # type: ignore[arg-type]
        lambda: accounts.rotate_refresh(
            value,  # type: ignore[arg-type]
            uuid.uuid4().hex,
            expires_at=time.time() + 60,
            grace_seconds=10,
        )[0],
    ]
    for lookup in lookups:
        try:
            found = lookup()
        except Exception:  # a refusal of a value of the wrong type, by either store
            continue
        assert found in (None, "unknown"), (value, found)
    assert accounts.family_of_refresh("victim-refresh") == "victim-family"
    assert accounts.count_users() == 1
