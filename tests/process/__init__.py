"""Tests that start processes: `taskd run` daemons killed and restarted, the `taskd` CLI,
systemd's tools, a wheel build."""
