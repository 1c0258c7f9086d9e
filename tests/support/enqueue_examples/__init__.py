"""README's examples of enqueuing in the application's own transaction, one module per block.

Each module's whole text is a code block of README's "From your web app's transaction"
section, character for character (tests/unit/test_enqueue_examples_in_readme.py checks it);
tests/daemon/test_enqueue_from_other_drivers.py runs them against a daemon.
"""
