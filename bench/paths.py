"""Where the bench finds the repository and the comparison servers (no third-party imports).

``python -m bench setup`` runs before the bench extra (psutil, matplotlib...) is
installed, so what it needs lives here.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
