"""``python -m bench setup`` runs before the bench extra is installed (no psutil yet)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_setup_needs_nothing_the_bench_extra_installs() -> None:
    # psutil made unimportable, as in the venv ./scripts/serve builds.
    code = (
        "import sys; sys.modules['psutil'] = None; sys.modules['matplotlib'] = None\n"
        "from bench.__main__ import main\n"
        "sys.exit(main(['setup', '--skip-node', '--skip-python']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "bench peers installed" in done.stdout


def test_bench_run_starts_from_outside_the_repository(tmp_path: Path) -> None:
    # As from the venv ./scripts/serve builds, run from any directory: the failover
    # scenario imports the cluster harness under tests/, which pip does not install.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "cold-opens" in done.stdout
