"""Helpers the tests share; fixtures are in conftest.py, sample files in tests/fixtures."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
