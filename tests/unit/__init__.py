"""Tests that start nothing: no database, no daemon, no subprocess."""
