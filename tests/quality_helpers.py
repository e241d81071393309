"""A finished run directory written from a list of tasks, in the formats `sigen run` writes,
for the judge, decontamination and export tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text + tail, encoding="utf-8")


def write_run(root: Path, tasks: list[tuple[str, str, str]], lang: str = "en") -> Path:
    """Tasks (instruction, input, output); consecutive tasks with the same instruction are
    instances of one instruction. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    instructions: list[dict] = []
    instances: list[dict] = []
    for instruction, input_text, output in tasks:
        if not instructions or instructions[-1]["instruction"] != instruction:
            instructions.append({"id": f"mi-{len(instructions) + 1:06d}",
                                 "instruction": instruction, "is_classification": False,
                                 "round": 1, "num_instances": 0, "most_similar": [],
                                 "avg_similarity": 0.0, "max_similarity": 0.0})
        instructions[-1]["num_instances"] += 1
        instances.append({"instruction_id": instructions[-1]["id"], "instruction": instruction,
                          "input": input_text, "output": output})
    write_jsonl(root / "machine_instructions.jsonl", instructions)
    write_jsonl(root / "instances.jsonl", instances)
    write_jsonl(root / "rejected.jsonl", [])
    manifest = {"status": "finished",
                "config": {"method": "self-instruct", "lang": lang, "model": "smollm2-135m",
                           "engine": "vllm", "num_instructions": len(instructions)},
                "model": {"name": "smollm2-135m"}, "engine": {"name": "vllm"},
                "counts": {"accepted": len(instructions), "instances": len(instances)}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root
