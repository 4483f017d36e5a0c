"""The work behind each CLI command; cli.py only parses arguments and imports these lazily."""
