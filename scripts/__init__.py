"""Command-line tools; each is run as a module from the repository root: ``python -m scripts.<name>``."""
