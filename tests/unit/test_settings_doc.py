"""docs/settings.md documents every setting, with the default the code has."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.settings import ENV_PREFIX, Settings

DOC = Path(__file__).parents[2] / "docs" / "settings.md"


def rows() -> dict[str, str]:
    """Each documented variable and its table row."""
    found: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        if not line.startswith("|"):
            continue
        for cell in line.split("|"):
            cell = cell.strip().strip("`")
            if cell.startswith(ENV_PREFIX):
                found[cell] = line
    return found


def test_every_setting_is_documented_with_its_default() -> None:
    documented = rows()
    defaults = Settings()
    missing, wrong = [], []
    for spec in dataclasses.fields(Settings):
        if spec.name in {"extra"}:
            continue
        variable = ENV_PREFIX + spec.name.upper()
        row = documented.get(variable)
        if row is None:
            missing.append(variable)
            continue
        default = getattr(defaults, spec.name)
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue
        if isinstance(default, float):
            # Whole numbers as written in the docs (2592000, not 2.592e+06).
            text = str(int(default)) if default.is_integer() else f"{default:g}"
        else:
            text = str(default)
        if f"`{text}`" not in row:
            wrong.append(f"{variable}: code default {text}")
    assert not missing, f"undocumented settings: {missing}"
    assert not wrong, f"docs/settings.md disagrees with the code: {wrong}"
