"""`sigen export`: a run's data in the formats that fine-tuning tools read.

- alpaca: a JSON list of {"instruction", "input", "output"} (Stanford Alpaca, LLaMA-Factory).
- sharegpt: a JSON list of {"id", "conversations": [human, gpt]} (FastChat, LLaMA-Factory,
  axolotl); the input, if any, follows the instruction after a blank line.
- jsonl: one {"instruction", "input", "output", "instruction_id"} object per line.

Only instances of accepted instructions are exported (see `report.load_run`), in file order,
less those the quality gate leaves out (`quality.select_instances`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.quality import select_instances
from selfinstruct_local.report import load_run
from selfinstruct_local.runstore import write_atomic

FORMATS = ("alpaca", "sharegpt", "jsonl")


def default_output(run_dir: Path | str, fmt: str) -> Path:
    return Path(run_dir) / ("export.jsonl" if fmt == "jsonl" else f"export.{fmt}.json")


def _sharegpt(rows: list[dict]) -> list[dict]:
    seen: Counter[str] = Counter()
    records = []
    for row in rows:
        # Ids stay stable across exports: the instruction's id and the instance's number in it.
        seen[row["instruction_id"]] += 1
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        records.append({
            "id": f"{row['instruction_id']}-{seen[row['instruction_id']]}",
            "conversations": [{"from": "human", "value": prompt},
                              {"from": "gpt", "value": row["output"]}],
        })
    return records


def export_rows(run_dir: Path | str, fmt: str, output: Path | str | None = None,
                min_score: int | None = None, keep_contaminated: bool = False
                ) -> tuple[Path, int, dict[str, int]]:
    """Like `export_run`, also returning how many examples were written and how many were
    left out, by reason (see `quality.select_instances`)."""
    given, fmt = fmt, fmt.strip().lower()
    if fmt not in FORMATS:
        raise SigenError(f"unknown export format {given!r}; choose one of {', '.join(FORMATS)}")
    run = load_run(run_dir)
    instances, left_out = select_instances(run, min_score, keep_contaminated)
    rows = [{"instruction_id": r["instruction_id"], "instruction": r["instruction"],
             "input": r.get("input") or "", "output": r["output"]} for r in instances]
    target = Path(output) if output is not None else default_output(run.root, fmt)
    if target.is_dir():
        raise SigenError(f"{target} is a directory; give a file name with -o")
    if fmt == "jsonl":
        text = "".join(json.dumps({k: r[k] for k in ("instruction", "input", "output",
                                                     "instruction_id")}, ensure_ascii=False)
                       + "\n" for r in rows)
    else:
        records = _sharegpt(rows) if fmt == "sharegpt" else [
            {"instruction": r["instruction"], "input": r["input"], "output": r["output"]}
            for r in rows
        ]
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode("utf-8"))
    return target, len(rows), left_out


def export_run(run_dir: Path | str, fmt: str, output: Path | str | None = None,
               min_score: int | None = None, keep_contaminated: bool = False) -> Path:
    """Write the run's instances as `fmt` (alpaca, sharegpt or jsonl); return the file's path.
    Tasks flagged by `sigen decontaminate` are left out unless `keep_contaminated`; with
    `min_score`, so are tasks the judge scored lower (or not at all)."""
    return export_rows(run_dir, fmt, output, min_score, keep_contaminated)[0]
