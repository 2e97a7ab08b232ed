"""Benchmarks of the Telegram face: ``python -m bench`` prints the table."""
