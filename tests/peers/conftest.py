"""The peers' own environments (peers/envs.py): built once and cached; the first run installs them (about a minute
each, from the package registry)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "peers"))
import envs  # noqa: E402


@pytest.fixture(scope="session")
def peers():
    return envs
