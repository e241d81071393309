"""The Self-Instruct and Alpaca pipelines: prompt builders, parsers, filters and the round loop."""
