"""selfinstruct-local: Self-Instruct / Alpaca data generated offline by local models."""

__version__ = "0.1.0"
