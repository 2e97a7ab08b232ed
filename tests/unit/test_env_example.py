"""`.env.example` documents every setting, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from core.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _documented() -> set[str]:
    names = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    return {name.lower() for name in names}


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    assert _documented() == set(Settings.model_fields)


def test_every_setting_in_env_example_has_a_comment_above_it() -> None:
    for block in ENV_EXAMPLE.read_text().split("\n\n"):
        lines = block.strip().splitlines()
        settings = [line for line in lines if re.match(r"^#? ?[A-Z][A-Z0-9_]+=", line)]
        if settings:
            first = next(line for line in lines if not line.startswith("# ---"))
            assert first.startswith("# ") and first not in settings, f"no comment: {block}"
