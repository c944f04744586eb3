"""Test-only helpers shared by several test files (one copy of each)."""
