"""`sigen export`: a run's data in the formats that fine-tuning tools read, with a dataset card
and, on request, LLaMA-Factory's dataset_info.json entry.

Only instances of accepted instructions are exported (see `runstore.load_run`), in file order,
less those the quality gate leaves out (`quality.select_instances`).
Everything that could stop the export (a format, a README.md sigen did not write, a broken
dataset_info.json, a file that would replace one of a sigen run) is checked before the first
file is written; each file is replaced atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.export.card import CARD, check_card_target, render_card
from selfinstruct_local.export.formats import FORMATS, SUFFIXES, render
from selfinstruct_local.export.llama_factory import (
    DATASET_INFO,
    dataset_entry,
    merged_dataset_info,
    read_dataset_info,
)
from selfinstruct_local.quality.gate import select_instances
from selfinstruct_local.report import summary_of
from selfinstruct_local.runstore import load_run, refuse_run_file, write_atomic

__all__ = ["FORMATS", "Exported", "default_output", "export", "export_run"]


@dataclass(frozen=True)
class Exported:
    path: Path
    fmt: str
    rows: int
    card: Path | None = None
    dataset_info: Path | None = None
    dataset_name: str | None = None
    left_out: dict[str, int] = field(default_factory=dict)  # tasks by reason (quality gate)


def default_output(run_dir: Path | str, fmt: str) -> Path:
    return Path(run_dir) / f"export.{SUFFIXES[fmt]}"


def check_format(fmt: str) -> str:
    name = fmt.strip().lower()
    if name not in FORMATS:
        raise SigenError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return name


def export(run_dir: Path | str, fmt: str, output: Path | str | None = None, *,
           system: str | None = None, card: bool = True, llama_factory: bool = False,
           dataset_name: str | None = None, min_score: int | None = None,
           keep_contaminated: bool = False) -> Exported:
    """Write the run's instances as `fmt`, the dataset card beside them (`card`), and their
    entry in dataset_info.json beside them (`llama_factory`, named `dataset_name`, by default
    the run directory's name). Tasks flagged by `sigen decontaminate` are left out unless
    `keep_contaminated`; with `min_score`, so are tasks the judge scored lower (or not)."""
    fmt = check_format(fmt)
    if dataset_name is not None and not llama_factory:
        raise SigenError("--dataset-name names the dataset_info.json entry: add --llama-factory")
    if dataset_name is not None and not dataset_name.strip():
        raise SigenError("--dataset-name is empty; give the name LLaMA-Factory should know it by")
    if system is not None and not system.strip():
        raise SigenError("--system is empty; give the system prompt's text, or leave it out")
    run = load_run(run_dir)
    instances, left_out = select_instances(run, min_score, keep_contaminated)
    rows = [{"id": r["id"], "instruction_id": r["instruction_id"],
             "instruction": r["instruction"], "input": r.get("input") or "",
             "output": r["output"],
             **({"conversation": r["conversation"]} if r.get("conversation") else {})}
            for r in instances]
    target = Path(output) if output is not None else default_output(run.root, fmt)
    card_path = target.parent / CARD if card else None
    info_path = target.parent / DATASET_INFO if llama_factory else None
    for path in (target, card_path, info_path):  # links beside -o could point into a run too
        if path is not None:
            refuse_run_file(path, "-o")
    if target.is_dir():
        raise SigenError(f"{target} is a directory; give a file name with -o")
    if card_path is not None:
        if card_path.resolve() == target.resolve():
            raise SigenError(f"{target} is where the dataset card goes; name the export "
                             "otherwise, or pass --no-card")
        check_card_target(card_path)
    existing = read_dataset_info(info_path) if info_path is not None else {}
    name = (dataset_name or run.root.resolve().name).strip()

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SigenError(f"cannot create the folder {target.parent} for -o: {exc.strerror}"
                         ) from None
    write_atomic(target, render(fmt, rows, system))
    if card_path is not None:
        # Computed from the files now (the manifest's summary is as of the run's last stop).
        summary = summary_of(run, warn=lambda _message: None)  # select_instances warned
        write_atomic(card_path, render_card(run, summary, target.name, fmt, len(rows),
                                            system).encode("utf-8"))
    if info_path is not None:
        entry = dataset_entry(fmt, target.name, system is not None)
        write_atomic(info_path, merged_dataset_info(existing, name, entry))
    return Exported(target, fmt, len(rows), card_path, info_path,
                    name if info_path is not None else None, left_out)


def export_run(run_dir: Path | str, fmt: str, output: Path | str | None = None,
               **options) -> Path:
    """Write the run's instances as `fmt` (see `export`); return the file's path."""
    return export(run_dir, fmt, output, **options).path
