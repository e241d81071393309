"""The tokenizer of a checkpoint on this machine, loaded once per process.

A run needs it in several places (seed lengths, passage sizes, Magpie's template, rendering
prompts for a server), each only to read it: one load (about a second, and transformers' import
the first time) serves them all. An engine that changes its tokenizer (transformers: padding
side, pad token) loads its own.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


def local_tokenizer(path: Path | str):  # -> transformers.PreTrainedTokenizerBase
    """The tokenizer of the checkpoint folder `path`, shared: never change it."""
    return _load(str(Path(path).resolve()))


@cache
def _load(path: str):
    from transformers import AutoTokenizer  # heavy; only with a checkpoint on this machine

    return AutoTokenizer.from_pretrained(path)
