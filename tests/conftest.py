"""Shared fixtures: every test runs in its own folder with no DE_ROOT."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in a fresh working directory, so ./experiments is private."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DE_ROOT", raising=False)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every @pytest.mark.anyio test on asyncio and on trio."""
    return str(request.param)
