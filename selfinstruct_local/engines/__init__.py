"""Engines: a batch of requests in, completions out. Heavy libraries are imported only when used."""

from selfinstruct_local.engines.base import (
    ENGINE_NAMES,
    Completion,
    Engine,
    Request,
    count_gpus,
    load_engine,
)

__all__ = ["ENGINE_NAMES", "Completion", "Engine", "Request", "count_gpus", "load_engine"]
