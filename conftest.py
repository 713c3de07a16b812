"""The project's own test setup lives in tests/conftest.py; this file marks the repository root for pytest."""
