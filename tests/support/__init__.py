"""What the tests share: run rows, the CLI, daemons in-process and as processes, a fake HTTP
server, and the task modules that subprocess daemons load. Fixtures stay in tests/conftest.py;
everything a test imports by name lives here (a test module never imports another)."""
