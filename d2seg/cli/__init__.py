"""The ``d2seg`` command: argument parsing and printing only, over d2seg's library API."""
