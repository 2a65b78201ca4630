"""What the test modules share: harnesses, fixtures registered by tests/conftest.py, and
helpers. Test modules import from here, never from each other (`pythonpath = ["tests"]`
with `--import-mode=importlib`: test modules are not importable by name)."""
