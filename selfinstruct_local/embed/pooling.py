"""How a checkpoint turns its token states into one sentence vector.

A sentence-transformers checkpoint says so itself: `modules.json` lists its modules (the
transformer, which may sit in a subfolder; a Pooling module whose `config.json` names the mode;
an optional Normalize), `sentence_bert_config.json` its maximum length, and
`config_sentence_transformers.json` an optional default prompt (a prefix such as "query: ").
Any other checkpoint, a chat or base LLM included, is mean-pooled over its last hidden state with
the attention mask: a usable, weak embedder (the packaged SmolLM2 is one; see embed/__init__.py).

Both in-process backends read this, so transformers and vLLM pool the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.errors import SigenError

MODES = ("mean", "cls", "last")
# sentence-transformers' names for the modes both backends compute.
_ST_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
             "pooling_mode_lasttoken": "last", "mean": "mean", "cls": "cls", "lasttoken": "last"}
DEFAULT_MAX_TOKENS = 512  # an instruction is far shorter; longer texts are truncated


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"  # one of MODES
    model_dir: Path | None = None  # where the transformer's weights are (a subfolder for some)
    max_tokens: int = DEFAULT_MAX_TOKENS
    prefix: str = ""  # put before every text (a sentence-transformers default prompt)
    dim: int = 0  # the vector's size: the transformer's hidden size (0: not known)
    source: str = "mean pooling over the last hidden state (no sentence-transformers config)"


def read_pooling(checkpoint: Path) -> Pooling:
    """The pooling a checkpoint asks for; mean pooling where it asks for none."""
    checkpoint = Path(checkpoint)
    modules = _json(checkpoint / "modules.json")
    if not isinstance(modules, list):
        return Pooling(model_dir=checkpoint, dim=_hidden_size(checkpoint))
    by_type = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules
               if isinstance(m, dict)}
    others = sorted(set(by_type) - {"Transformer", "Pooling", "Normalize"})
    if others:  # a Dense projection, say: the vectors would not be the model's
        raise SigenError(f"{checkpoint / 'modules.json'}: module {', '.join(others)} is not "
                         "one that sigen computes (it runs the transformer, its pooling and "
                         "normalization); serve the model and pass --embed-base-url.")
    model_dir = checkpoint / str(by_type.get("Transformer", {}).get("path", ""))
    pooling_module = by_type.get("Pooling")
    mode = "mean"
    if pooling_module is not None:
        where = checkpoint / str(pooling_module.get("path", "")) / "config.json"
        mode = _st_mode(where, _json(where))
    st_config = _json(model_dir / "sentence_bert_config.json") or {}
    max_tokens = int(st_config.get("max_seq_length") or DEFAULT_MAX_TOKENS)
    prompts = _json(checkpoint / "config_sentence_transformers.json") or {}
    default_prompt = prompts.get("default_prompt_name")
    prefix = str((prompts.get("prompts") or {}).get(default_prompt, "")) if default_prompt else ""
    return Pooling(mode=mode, model_dir=model_dir, max_tokens=min(max_tokens, 8192),
                   prefix=prefix, dim=_hidden_size(model_dir),
                   source=f"{mode} pooling from {checkpoint / 'modules.json'}")


def _hidden_size(model_dir: Path) -> int:
    config = _json(model_dir / "config.json")
    size = config.get("hidden_size") if isinstance(config, dict) else None
    return size if isinstance(size, int) else 0


def _st_mode(where: Path, config: object) -> str:
    if not isinstance(config, dict):
        raise SigenError(f"{where}: missing or not a JSON object, but modules.json names a "
                         "Pooling module there; restore the checkpoint's pooling config.")
    named = config.get("pooling_mode")
    chosen = [named] if isinstance(named, str) else [k for k, v in config.items() if v is True]
    modes = {_ST_MODES.get(k) for k in chosen}
    if len(modes) == 1 and None not in modes:
        return modes.pop()
    raise SigenError(f"{where}: pooling {', '.join(map(str, chosen)) or '(none)'} is not one "
                     "that sigen computes (mean tokens, CLS token or last token, one of them); "
                     "serve the model and pass --embed-base-url to use its own pooling.")


def _json(path: Path) -> object:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise SigenError(f"{path}: not valid JSON ({exc}); restore the checkpoint's file.") \
            from None
