"""Test helpers for task authors: ``taskd.testing.anthropic`` is a fake Anthropic API."""
