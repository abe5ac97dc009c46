"""The servers the attachment tests start: clamd (Debian's clamav-daemon) and moto's S3 server.

clamd gets a temporary config and a signature database written here: one hash signature
of the EICAR test file, so no virus database download (freshclam) is ever needed. The
EICAR string is put together from parts at run time; the repository holds no copy of it.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import urllib.request
from pathlib import Path

from tests.services import ServiceProcess, service_missing

#: The signature name clamd reports (it adds ``.UNOFFICIAL`` to a hash signature).
EICAR_SIGNATURE = "Boardcast.Test.EICAR"


def eicar() -> bytes:
    """The EICAR anti-virus test file, assembled from parts."""
    parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-TEST-FILE!$H+H*"]
    return "".join(parts).encode()


def clamd_binary() -> str:
    """clamd's path, or skip (fail under CI) when clamav-daemon is not installed."""
    found = shutil.which("clamd") or shutil.which("clamd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        service_missing("clamd is not installed (apt-get install clamav-daemon)")
    return found


class ClamdServer(ServiceProcess):
    """clamd on a loopback TCP port, with a database that knows only the EICAR file."""

    name = "clamd"
    start_timeout = 60.0

    def __init__(self, directory: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.directory = directory
        self.binary = clamd_binary()
        database = directory / "db"
        database.mkdir(parents=True, exist_ok=True)
        sample = eicar()
        (database / "boardcast-test.hdb").write_text(
            f"{hashlib.md5(sample).hexdigest()}:{len(sample)}:{EICAR_SIGNATURE}\n"
        )
        self.config = directory / "clamd.conf"
        self.config.write_text(
            "\n".join(
                [
                    "Foreground yes",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    f"DatabaseDirectory {database}",
                    f"LogFile {directory / 'clamd.log'}",
                    f"PidFile {directory / 'clamd.pid'}",
                    f"TemporaryDirectory {directory}",
                    "StreamMaxLength 64M",
                    "SelfCheck 3600",
                    "",
                ]
            )
        )

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config)]

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                probe.sendall(b"nPING\n")
                return probe.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def log_path(self) -> Path:
        return self.directory / "clamd.out"


def moto_binary() -> str:
    """moto_server's path, or skip (fail under CI) when moto[server] is not installed."""
    import sys

    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        service_missing("moto_server is not installed (pip install 'moto[server]')")
    return found


class MotoServer(ServiceProcess):
    """moto's S3 (and more) server on a loopback port: a real HTTP server, not a mock."""

    name = "moto_server"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.directory = directory
        self.binary = moto_binary()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "-H", "127.0.0.1", "-p", str(self.port)]

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_path(self) -> Path:
        return self.directory / "moto.log"
