#!/usr/bin/env python3
"""Record Alpaca-on-a-corpus completions of the packaged model for the parser tests.

For each language, the first passages of the test corpus go to the transformers engine as
`build_alpaca_grounded_request` builds them (all kinds, as many tasks as a 2,048-token context
allows), and each completion is written with the reply prefix, its finish reason and passage id to
tests/fixtures/completions/alpaca_grounded_<lang>.json. One `generate` call per language (a few
minutes on two idle CPU cores; much longer on a busy machine).

    python scripts/record_alpaca_grounded.py [--passages 3] [--max-tokens 240]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selfinstruct_local.corpus import load_corpus  # noqa: E402
from selfinstruct_local.engines import EngineOptions, load_engine  # noqa: E402
from selfinstruct_local.methods.alpaca_grounded import (  # noqa: E402
    build_alpaca_grounded_request,
    tasks_per_request,
)
from selfinstruct_local.models import ensure_weights, load_registry  # noqa: E402
from selfinstruct_local.prompts import load_prompts  # noqa: E402

CORPORA = {"zh": ROOT / "tests/fixtures/corpus_zh", "en": ROOT / "tests/fixtures/corpus_en"}
OUT = ROOT / "tests/fixtures/completions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=240,
                        help="reply tokens per request (small, so that lists are cut off)")
    args = parser.parse_args()
    spec = load_registry().resolve("smollm2-135m")
    ensure_weights(spec, log=print)
    engine = load_engine("transformers", spec, EngineOptions(gpus=0, seed=0, batch_size=4))
    for lang, corpus in CORPORA.items():
        prompts = load_prompts(lang)
        kinds = list(prompts.grounded_kinds)
        passages = load_corpus(corpus, max_chars=300)[: args.passages]
        n = tasks_per_request(prompts, kinds, spec.max_model_len // 6, spec.max_model_len)
        requests = [build_alpaca_grounded_request(prompts, p, kinds, n, max_tokens=args.max_tokens,
                                                  seed=k)
                    for k, p in enumerate(passages)]
        completions = engine.generate(requests)
        rows = [{"model": spec.name, "passage_id": p.id, "n_tasks": n, "seed": k,
                 "prefix": r.assistant_prefix, "finish_reason": c.finish_reason, "text": c.text}
                for k, (p, r, c) in enumerate(zip(passages, requests, completions, strict=True))]
        path = OUT / f"alpaca_grounded_{lang}.json"
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"{path}: {[(r['finish_reason'], len(r['text'])) for r in rows]}")


if __name__ == "__main__":
    main()
