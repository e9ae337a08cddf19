"""Shared fixtures: the examples' paths and an isolated profile cache for every test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def example(name: str) -> str:
    return str(EXAMPLES / name)
