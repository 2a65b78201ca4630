"""Where things are, whichever tier folder a test module lives in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent  # the checkout
UNITS = ROOT / "units"
CORPUS = TESTS / "corpus"
FLEET_UNITS = TESTS / "fleet_units"
IMAGES = TESTS / "images"
