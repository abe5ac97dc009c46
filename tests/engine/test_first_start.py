"""`boardcast serve` as an operator starts it: auth on, a one-time admin link, TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.interop.servers import serve_process

LINK = re.compile(r"First start: .*?(?P<url>https?://\S+/v1/auth/once\?code=\S+)")


def _wait_for_line(output: list[str], pattern: re.Pattern[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in output:
            found = pattern.search(line)
            if found:
                return found.group("url")
        time.sleep(0.05)
    raise AssertionError("not printed:\n" + "\n".join(output[-20:]))


async def test_first_start_prints_a_login_link_that_works_once(tmp_path: Path) -> None:
    server = serve_process(tmp_path, "--backend", "local", "--auth", "required")
    await server.astart()
    try:
        url = _wait_for_line(server.output, LINK)
        # unsafe=True: keep cookies of a host given by IP address, as browsers do.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(url, allow_redirects=False) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/"
            base = url.split("/v1/")[0]
            async with http.get(f"{base}/v1/me") as response:
                me = await response.json()
                assert response.status == 200 and me["name"] == "admin" and me["admin"]
            # The administrator sets a password (changes from this site carry its Origin).
            origin = {"Origin": base}
            body = {"password": "the admin's new password"}
            async with http.put(f"{base}/v1/me/password", json=body, headers=origin) as response:
                assert response.status == 204, await response.text()
            login = {"username": "admin", "password": "the admin's new password"}
            async with http.post(f"{base}/v1/auth/login", json=login) as response:
                assert response.status == 200
        async with aiohttp.ClientSession() as fresh, fresh.get(url) as response:
            assert response.status == 401  # the link is spent
        # Without credentials nothing is served.
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(f"{base}/v1/projects") as response:
                assert response.status == 401
    finally:
        await server.astop()
    # A second start on the same data directory prints no new link.
    again = serve_process(tmp_path, "--backend", "local", "--auth", "required")
    again.port = server.port
    await again.astart()
    try:
        await asyncio.sleep(1)
        assert not any(LINK.search(line) for line in again.output)
    finally:
        await again.astop()


async def test_auth_none_says_so_loudly(tmp_path: Path) -> None:
    server = serve_process(tmp_path, "--backend", "local", "--auth", "none")
    await server.astart()
    try:
        await asyncio.sleep(0.5)
        assert any("auth is off" in line for line in server.output)
    finally:
        await server.astop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_https_and_wss_only(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    data = tmp_path / "data"
    server = serve_process(
        data,
        "--backend",
        "local",
        "--auth",
        "required",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    await server.astart()
    try:
        url = _wait_for_line(server.output, LINK)
        assert url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(url, ssl=trusted, allow_redirects=False) as response:
                assert response.status == 303
                cookie = response.headers.getall("Set-Cookie")[0]
                assert "Secure" in cookie
            ws = await http.ws_connect(f"wss://127.0.0.1:{server.port}/ws/b1", ssl=trusted)
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.BINARY  # synced over wss with the cookie
            await ws.close()
            # Plain HTTP on the TLS port is not served.
            try:
                async with http.get(f"http://127.0.0.1:{server.port}/healthz") as response:
                    assert response.status >= 400
            except aiohttp.ClientError:
                pass
    finally:
        await server.astop()
