"""The key ring: sealing bound to a context, every malformed blob a DecryptionFailed,
rotation, the key file (mode, format, atomic and shared between processes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt.errors import BoardcastError, DecryptionFailed
from persistence.keyring import (
    ENCRYPTION_SETTING,
    KEY_FILE_SETTING,
    MIN_BLOB_BYTES,
    EncryptionSettings,
    KeyRing,
    is_encrypted,
    key_id_of,
)

CONTEXT = b'["update","board-1"]'


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.open(str(tmp_path / "keys" / "at-rest.json"))


def test_a_sealed_blob_opens_with_its_context_only(ring: KeyRing) -> None:
    blob = ring.encrypt(b"task title", context=CONTEXT)
    assert ring.decrypt(blob, context=CONTEXT) == b"task title"
    assert b"task title" not in blob and ring.is_encrypted(blob)
    assert key_id_of(blob) == ring.active_key_id
    with pytest.raises(DecryptionFailed):
        ring.decrypt(blob, context=b'["update","board-2"]')  # moved to another board
    with pytest.raises(DecryptionFailed):
        ring.decrypt(blob, context=b'["events","board-1"]')  # moved to another field
    assert issubclass(DecryptionFailed, BoardcastError)


def test_the_same_plaintext_seals_differently_every_time(ring: KeyRing) -> None:
    assert ring.encrypt(b"x", context=CONTEXT) != ring.encrypt(b"x", context=CONTEXT)


def test_plaintext_from_before_is_told_apart(ring: KeyRing) -> None:
    # A Yjs update, msgpack events, an empty update, JSON: none carries the envelope.
    for old in (b"\x01\x02\xa1\x9b\x01\x00", b"\x91\x81", b"", b'{"a":1}', b"\x00\x00"):
        assert not ring.is_encrypted(old) and not is_encrypted(old)
        assert key_id_of(old) is None
    assert ring.decrypt_text("plain old title", context=CONTEXT) == "plain old title"


def test_text_fields_round_trip_and_stay_text(ring: KeyRing) -> None:
    sealed = ring.encrypt_text("Ünïcode ✓ title", context=CONTEXT)
    assert sealed.startswith("enc1:") and sealed.isascii()
    assert ring.text_key_id(sealed) == ring.active_key_id
    assert ring.decrypt_text(sealed, context=CONTEXT) == "Ünïcode ✓ title"
    with pytest.raises(DecryptionFailed):
        ring.decrypt_text("enc1:not base64!", context=CONTEXT)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plaintext=st.binary(max_size=200),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_changed_byte_is_the_named_error(
    ring: KeyRing, plaintext: bytes, position: int, flip: int
) -> None:
    blob = bytearray(ring.encrypt(plaintext, context=CONTEXT))
    blob[position % len(blob)] ^= flip
    with pytest.raises(DecryptionFailed):
        ring.decrypt(bytes(blob), context=CONTEXT)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plaintext=st.binary(max_size=200), keep=st.integers(min_value=0))
def test_a_truncated_or_extended_blob_is_the_named_error(
    ring: KeyRing, plaintext: bytes, keep: int
) -> None:
    blob = ring.encrypt(plaintext, context=CONTEXT)
    cut = blob[: keep % len(blob)]
    with pytest.raises(DecryptionFailed):
        ring.decrypt(cut, context=CONTEXT)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(blob + b"\x00", context=CONTEXT)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(max_size=120),
        st.binary(max_size=120).map(lambda tail: b"\xb0\xca\x57\x01" + tail),
    )
)
def test_arbitrary_bytes_never_crash_or_decrypt(ring: KeyRing, garbage: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        ring.decrypt(garbage, context=CONTEXT)


def test_a_blob_under_a_key_the_ring_lacks_is_the_named_error(
    ring: KeyRing, tmp_path: Path
) -> None:
    other = KeyRing.open(str(tmp_path / "other.json"))
    blob = other.encrypt(b"elsewhere", context=CONTEXT)
    assert len(blob) >= MIN_BLOB_BYTES
    with pytest.raises(DecryptionFailed, match="does not hold"):
        ring.decrypt(blob, context=CONTEXT)
    # The same key id with another key: the tag check refuses it.
    forged = blob[:4] + bytes.fromhex(ring.active_key_id) + blob[8:]
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        ring.decrypt(forged, context=CONTEXT)


def test_rotation_keeps_old_keys_for_reading(ring: KeyRing) -> None:
    first = ring.active_key_id
    old_blob = ring.encrypt(b"under key 1", context=CONTEXT)
    second = ring.rotate()
    assert second != first and ring.active_key_id == second
    assert key_id_of(ring.encrypt(b"new", context=CONTEXT)) == second
    assert ring.decrypt(old_blob, context=CONTEXT) == b"under key 1"
    assert ring.key_ids == [first, second]
    with pytest.raises(ValueError, match="active"):
        ring.remove(second)
    ring.remove(first)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(old_blob, context=CONTEXT)


def test_the_key_file_is_private_json_and_reopens(ring: KeyRing) -> None:
    assert ring.path is not None
    mode = stat.S_IMODE(os.stat(ring.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(ring.path)).st_mode) == 0o700
    second = ring.rotate()
    document = json.loads(Path(ring.path).read_text())
    assert document["format"] == "boardcast-keyring" and document["active"] == second
    assert [key["id"] for key in document["keys"]] == ring.key_ids
    assert all(key["created_at"].endswith("Z") and key["key"] for key in document["keys"])
    assert stat.S_IMODE(os.stat(ring.path).st_mode) == 0o600
    again = KeyRing.open(ring.path, create=False)
    blob = ring.encrypt(b"shared", context=CONTEXT)
    assert again.decrypt(blob, context=CONTEXT) == b"shared"
    # No temporary file is left beside it.
    assert sorted(os.listdir(os.path.dirname(ring.path))) == ["at-rest.json", "at-rest.json.lock"]


def test_opening_without_create_needs_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyRing.open(str(tmp_path / "missing.json"), create=False)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a usable key ring"):
        KeyRing.open(str(tmp_path / "bad.json"))


def test_a_running_process_meets_a_key_another_one_rotated_in(ring: KeyRing) -> None:
    assert ring.path is not None
    other = KeyRing.open(ring.path, create=False)
    new = other.rotate()
    blob = other.encrypt(b"from the rotated ring", context=CONTEXT)
    # The ring reads the file again when a blob names a key it does not know yet.
    assert ring.decrypt(blob, context=CONTEXT) == b"from the rotated ring"
    assert ring.active_key_id == new


def test_a_stale_ring_adopts_the_rotated_active_key_after_its_refresh_period(
    tmp_path: Path,
) -> None:
    now = [0.0]
    path = str(tmp_path / "k.json")
    KeyRing.open(path)
    stale = KeyRing(*_read(path), path=path, refresh_seconds=5.0, clock=lambda: now[0])
    new = KeyRing.open(path).rotate()
    assert stale.active_key_id != new
    now[0] = 5.0
    assert stale.active_key_id == new


def _read(path: str) -> tuple[list, str]:  # type: ignore[type-arg]
    from persistence.keyring import _parse

    return _parse(Path(path).read_bytes(), path)


def _open_and_seal(path: str) -> str:
    return KeyRing.open(path).active_key_id


def test_processes_creating_the_ring_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = str(tmp_path / "keys" / "at-rest.json")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_open_and_seal, [path] * 8)
    assert len(set(ids)) == 1 and KeyRing.open(path).key_ids == ids[:1]


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    assert EncryptionSettings.from_environment({}) == EncryptionSettings()
    off = EncryptionSettings.from_environment({ENCRYPTION_SETTING: "off"})
    assert not off.enabled
    strict = EncryptionSettings.from_environment({ENCRYPTION_SETTING: "strict"})
    assert strict.enabled and strict.refuse_plaintext
    named = EncryptionSettings.from_environment({KEY_FILE_SETTING: "/run/secrets/ring.json"})
    assert named.key_path("/data") == "/run/secrets/ring.json"
    assert EncryptionSettings().key_path(str(tmp_path)) == str(tmp_path / "keys" / "at-rest.json")
    with pytest.raises(ValueError, match=ENCRYPTION_SETTING):
        EncryptionSettings.from_environment({ENCRYPTION_SETTING: "maybe"})
