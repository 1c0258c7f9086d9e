"""Tests of a daemon running in the test's own event loop (conftest's ``start_daemon``)."""
