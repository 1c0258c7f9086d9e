"""Example task modules, one per use case; put your own modules here too."""
