"""Signed file URLs and file names: the pure checks under the embedded store and the REST API."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.file_signing import SignatureRefused, load_or_create_key, signed_query, verify
from persistence.files import (
    FileRefused,
    attachment_id,
    check_content_type,
    check_size,
    content_disposition,
    sanitise_name,
)

KEY = bytes(range(32))
PATH = "/v1/files/" + "a" * 32 + "/" + "b" * 32


def query_of(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split("&"))


def test_a_signed_grant_holds_until_it_expires() -> None:
    query = query_of(signed_query(KEY, "PUT", PATH, expires=1000, size=42))
    grant = verify(KEY, "PUT", PATH, query, now=999.5)
    assert (grant.method, grant.path, grant.size) == ("PUT", PATH, 42)
    with pytest.raises(SignatureRefused) as refused:
        verify(KEY, "PUT", PATH, query, now=1000.5)
    assert refused.value.reason == "expired"


@pytest.mark.parametrize(
    "change",
    [
        {"method": "GET"},
        {"path": PATH.replace("b" * 32, "c" * 32)},
        {"size": "43"},
        {"expires": "2000"},
        {"sig": "0" * 64},
        {"sig": ""},
        {"key": bytes(32)},
    ],
)
def test_any_change_to_a_signed_url_breaks_it(change: dict[str, object]) -> None:
    query = query_of(signed_query(KEY, "PUT", PATH, expires=1000, size=42))
    for name in ("size", "expires", "sig"):
        if name in change:
            query[name] = str(change[name])
    method = str(change.get("method", "PUT"))
    path = str(change.get("path", PATH))
    key = change.get("key", KEY)
    assert isinstance(key, bytes)
    with pytest.raises(SignatureRefused) as refused:
        verify(key, method, path, query, now=10)
    assert refused.value.reason == "invalid"


@given(st.dictionaries(st.sampled_from(["expires", "size", "sig", "x"]), st.text(max_size=80)))
def test_any_query_is_refused_or_holds_never_crashes(query: dict[str, str]) -> None:
    try:
        verify(KEY, "GET", PATH, query, now=0)
    except SignatureRefused:
        return
    raise AssertionError("an unsigned query was accepted")


def test_the_url_key_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "files-url.key"
    first = load_or_create_key(path)
    assert load_or_create_key(path) == first and len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600


@given(st.text(max_size=600))
def test_any_name_is_refused_or_made_safe(raw: str) -> None:
    try:
        name = sanitise_name(raw, 200)
    except FileRefused as refused:
        assert refused.problem == "validation"
        return
    assert 1 <= len(name) <= 200
    assert not any(ch in name for ch in "/\\\x00") and not name.startswith((".", " "))
    assert all(unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in name)
    assert sanitise_name(name, 200) == name  # already safe: unchanged
    header = content_disposition(name)
    assert "\r" not in header and "\n" not in header and header.isascii()


def test_names_keep_their_extension_when_cut() -> None:
    assert sanitise_name("x" * 300 + ".pdf", 200) == "x" * 196 + ".pdf"
    assert sanitise_name("../../etc/passwd", 200) == "_.._etc_passwd"
    assert sanitise_name("report\u202egpj.exe", 200) == "report_gpj.exe"  # no bidi tricks
    with pytest.raises(FileRefused):
        sanitise_name("../..", 200)


def test_content_types_and_sizes() -> None:
    allowed = ("text/plain", "image/png")
    assert check_content_type("Text/Plain; charset=utf-8", allowed) == "text/plain"
    with pytest.raises(FileRefused) as refused:
        check_content_type("text/html", allowed)
    assert refused.value.problem == "unsupported-media-type"
    assert check_content_type("text/html", ("*",)) == "text/html"
    with pytest.raises(FileRefused):
        check_content_type("not a type", ("*",))
    assert check_size(10, 10) == 10 and check_size(10.0, 10) == 10
    for bad in (0, -1, True, "5", 1.5, None):
        with pytest.raises(FileRefused) as refused:
            check_size(bad, 10)
        assert refused.value.problem == "validation"
    with pytest.raises(FileRefused) as refused:
        check_size(11, 10)
    assert refused.value.problem == "file-too-large"


def test_the_same_name_on_a_task_is_the_same_attachment() -> None:
    assert attachment_id("b", "t", "Plan.pdf") == attachment_id("b", "t", "plan.PDF")
    assert attachment_id("b", "t", "plan.pdf") != attachment_id("b", "t2", "plan.pdf")
