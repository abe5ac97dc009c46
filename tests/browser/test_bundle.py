"""The committed bundle (clients/web/dist, which the gateway serves) is what the sources build.

`boardcast serve` needs no Node because dist/ is committed; this test keeps it honest: it
builds the app again from the lock file's packages and compares every file.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

from tests.browser.conftest import DIST, ROOT
from tests.services import TIMEOUT_SCALE, service_missing

WEB = ROOT / "clients" / "web"


def test_committed_bundle_matches_a_fresh_build(tmp_path: Path) -> None:
    vite = WEB / "node_modules" / "vite" / "bin" / "vite.js"
    node = shutil.which("node")
    if node is None:
        service_missing("node is not installed (apt-get install -y nodejs npm)")
    if not vite.is_file():
        service_missing(f"vite is not installed ({vite}; npm ci in clients/web)")
    out = tmp_path / "dist"
    subprocess.run(
        [node, str(vite), "build", "--outDir", str(out), "--emptyOutDir", "--logLevel", "warn"],
        cwd=WEB,
        check=True,
        timeout=120 * TIMEOUT_SCALE,
    )
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DIST).as_posix() for p in DIST.rglob("*") if p.is_file())
    rebuild = "cd clients/web && npm ci && npm run build, then commit dist/"
    assert built == committed, f"dist/ is stale ({rebuild})"
    _, mismatch, errors = filecmp.cmpfiles(out, DIST, built, shallow=False)
    assert not mismatch and not errors, f"dist/ differs in {mismatch + errors} ({rebuild})"
