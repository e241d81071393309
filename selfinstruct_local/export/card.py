"""The dataset card: README.md beside an export, as the Hugging Face Hub reads it.

YAML front matter (license, language, size, task, tags, which file is the data), then what a
reader of the data needs to know: the model, the method, the seeds, the counts, what the filters
dropped and why, the generation settings, and how to cite the methods.

sigen only ever replaces a README.md that it wrote itself: its front matter carries MARKER as a
YAML comment. Delete that line to keep an edited card; a README.md without it stops the export.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import default_models_file
from selfinstruct_local.runstore import Run

CARD = "README.md"
MARKER = "# sigen-card: written by `sigen export`; delete this line to keep sigen off this file"
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M",
                   "100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")
LOADERS = {"alpaca": "json", "sharegpt": "json", "jsonl": "json", "messages": "json",
           "parquet": "parquet"}

BIBTEX = r"""@inproceedings{wang2023selfinstruct,
  title     = {Self-Instruct: Aligning Language Models with Self-Generated Instructions},
  author    = {Wang, Yizhong and Kordi, Yeganeh and Mishra, Swaroop and Liu, Alisa and
               Smith, Noah A. and Khashabi, Daniel and Hajishirzi, Hannaneh},
  booktitle = {Proceedings of the 61st Annual Meeting of the Association for Computational
               Linguistics (Volume 1: Long Papers)},
  pages     = {13484--13508},
  year      = {2023},
  address   = {Toronto, Canada},
  publisher = {Association for Computational Linguistics},
  doi       = {10.18653/v1/2023.acl-long.754}
}

@misc{taori2023alpaca,
  title        = {Stanford Alpaca: An Instruction-following LLaMA model},
  author       = {Taori, Rohan and Gulrajani, Ishaan and Zhang, Tianyi and Dubois, Yann and
                  Li, Xuechen and Guestrin, Carlos and Liang, Percy and Hashimoto, Tatsunori B.},
  year         = {2023},
  howpublished = {\url{https://github.com/tatsu-lab/stanford_alpaca}}
}"""

METHODS = {
    "self-instruct": "Self-Instruct (Wang et al., 2023): in rounds, the model continues a list of "
                     "8 tasks drawn from the pool (6 human-written seeds, 2 of its own), says "
                     "whether each new instruction is a classification task, and writes its "
                     "instances; new instructions too similar to the pool (ROUGE-L >= 0.7) are "
                     "dropped",
    "alpaca": "Alpaca (Taori et al., 2023): each prompt shows 3 seed tasks and asks for 20 "
              "complete instruction/input/output tasks; the same filters as Self-Instruct",
    "grounded": "Self-Instruct grounded in a corpus: each request shows a passage of the corpus "
                "and asks for one task of a given kind about it; the passage becomes the task's "
                "input and the answer is generated from it; the usual filters, plus answers "
                "that copy the passage or the prompt",
}


def check_card_target(path: Path) -> None:
    """SigenError if `path` holds a README.md that sigen did not write (before writing anything)."""
    if not path.exists():
        return
    try:
        head = path.read_text(encoding="utf-8", errors="replace").splitlines()[:3]
    except OSError as exc:
        raise SigenError(f"cannot read {path} ({exc.strerror})") from None
    if MARKER not in head:
        raise SigenError(f"{path} exists and was not written by sigen, so the dataset card "
                         "would replace it. Export into a folder of its own (-o DIR/FILE), or "
                         "pass --no-card")


def size_category(rows: int) -> str:
    """The Hub's size bucket: n<1K, 1K<n<10K, ... (a bound goes to the bucket above it)."""
    index, bound = 0, 1000
    while rows >= bound and index < len(SIZE_CATEGORIES) - 1:
        index, bound = index + 1, bound * 10
    return SIZE_CATEGORIES[index]


def _registry_entry(manifest: dict) -> dict:
    """The model's entry in the registry the run used ({} if gone, or if not a registry model)."""
    config = manifest.get("config") or {}
    source = Path(config["models_file"]) if config.get("models_file") else default_models_file()
    try:
        models = (yaml.safe_load(source.read_text(encoding="utf-8")) or {}).get("models") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    entry = models.get((manifest.get("model") or {}).get("name"))
    return entry if isinstance(entry, dict) else {}


def _checkpoint_license(path: str | None) -> str | None:
    """The license in a checkpoint's own model card (README.md front matter), if any."""
    card = Path(path) / CARD if path else None
    try:
        text = card.read_text(encoding="utf-8") if card and card.is_file() else ""
        meta = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, IndexError):
        return None
    found = meta.get("license") if isinstance(meta, dict) else None
    return str(found) if isinstance(found, str) and found.strip() else None


def model_license(manifest: dict, entry: dict) -> tuple[str, str]:
    """(license, where it came from): the registry entry's `license`, else the checkpoint's
    model card, else "other" (the Hub's value for terms it does not list)."""
    if isinstance(entry.get("license"), str) and entry["license"].strip():
        return entry["license"].strip(), "the model's registry entry"
    found = _checkpoint_license((manifest.get("model") or {}).get("path"))
    if found:
        return found, "the model checkpoint's own card"
    return "other", ""


def front_matter(run: Run, file_name: str, rows: int, license_id: str) -> dict:
    lang = (run.manifest.get("config") or {}).get("lang") or "en"
    return {
        "license": license_id,
        "language": [lang],
        "size_categories": [size_category(rows)],
        "task_categories": ["text-generation"],
        "tags": ["self-instruct", "alpaca", "synthetic"],
        "pretty_name": run.root.resolve().name,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": file_name}]}],
    }


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> list[str]:
    right = header[1] != "value"  # counts read best right-aligned
    return [f"| {header[0]} | {header[1]} |", f"| --- | {'---:' if right else '---'} |",
            *(f"| {a} | {b} |" for a, b in rows)]


def _value(value: object) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _reasons(counts: dict) -> list[tuple[str, str]]:
    return [(reason, f"{n:,}") for reason, n in counts.items()] or [("(none)", "0")]


def _settings(manifest: dict, summary: dict, sampling: dict) -> list[tuple[str, str]]:
    """The generation settings, as (name, value) rows; what the manifest lacks reads "-"."""
    config, model = manifest.get("config") or {}, manifest.get("model") or {}
    engine = manifest.get("engine") or {}
    # The run's --temperature/--top-p over the registry's defaults, as the pipeline does.
    chosen = {k: config.get(k) for k in ("temperature", "top_p") if config.get(k) is not None}
    seeds = f"`{Path(config['seeds']).name}`" if config.get("seeds") else "-"
    rows = [
        ("model", f"`{_value(model.get('name'))}`"),
        ("prompt format", _value(model.get("prompt_format"))),
        ("engine / dtype", f"{_value(engine.get('name'))} / {_value(engine.get('dtype'))}"),
        ("seed tasks", f"{seeds}: {_value((manifest.get('counts') or {}).get('seed_tasks'))} "
                       f"tasks, sha256 `{_value(config.get('seeds_sha256'))}`"),
        ("language", _value(config.get("lang"))),
        ("sampling", ", ".join(f"{k} {v}" for k, v in {**sampling, **chosen}.items()) or "-"),
        ("random seed", _value(config.get("seed"))),
        ("instructions asked for", _value(config.get("num_instructions"))),
        ("run status", _value(manifest.get("status"))),
        ("tokens generated", _value(summary.get("tokens_generated"))),
        ("engine time, s", _value(summary.get("engine_seconds"))),
    ]
    if config.get("corpus"):
        rows.insert(5, ("corpus", f"`{Path(config['corpus']).name}`, passages of at most "
                                  f"{_value(config.get('passage_chars'))} characters"))
    return rows


def render_card(run: Run, summary: dict, file_name: str, fmt: str, rows: int,
                system: str | None) -> str:
    """README.md's text for an export of `rows` rows from `run` into `file_name`."""
    manifest, counts = run.manifest, summary["counts"]
    entry = _registry_entry(manifest)
    license_id, license_source = model_license(manifest, entry)
    meta = yaml.safe_dump(front_matter(run, file_name, rows, license_id), sort_keys=False,
                          allow_unicode=True)
    config = manifest.get("config") or {}
    method = "grounded" if config.get("corpus") else config.get("method") or "self-instruct"
    version = (manifest.get("tool") or {}).get("version")
    license_note = (f"`{license_id}`, from {license_source}. " if license_source else
                    "`other`: the model's registry entry names no license. ")
    lines = [
        "---", MARKER, meta.rstrip("\n"), "---", "",
        f"# {run.root.resolve().name}", "",
        "Instruction-tuning data written by a language model, offline, with selfinstruct-local "
        f"(`sigen`{f' {version}' if version else ''}). It was filtered automatically and not "
        "reviewed by people.", "",
        "## Data", "",
        f"`{file_name}`: {rows:,} examples in the **{fmt}** format"
        + (f", each with the system prompt {system!r}" if system is not None else "") + ". "
        f"Load it with `datasets.load_dataset(\"{LOADERS[fmt]}\", data_files=\"{file_name}\")`.",
        "",
        "## How it was made", "",
        f"Method: {METHODS.get(method, method)}.", "",
        *_table(("setting", "value"), _settings(manifest, summary, entry.get("sampling") or {})),
        "",
        "## Counts", "",
        *_table(("", "count"), [
            ("accepted instructions", f"{counts['accepted_instructions']:,}"),
            ("instances (examples)", f"{counts['instances']:,}"),
            ("rejected instructions", f"{counts['rejected_instructions']:,}"),
            ("dropped instances", f"{counts['dropped_instances']:,}")]), "",
        "## Filters", "",
        "Instructions rejected, by reason:", "",
        *_table(("reason", "instructions"), _reasons(summary["rejected_by_reason"])), "",
        "Instances dropped, by reason:", "",
        *_table(("reason", "instances"), _reasons(summary["dropped_by_reason"])), "",
        "## License", "",
        license_note + "Text generated by a model may be subject to the terms of that model's "
        "license; check them before you publish or train on this data.", "",
        "## Citation", "",
        "The methods this data was generated with:", "",
        "```bibtex", BIBTEX, "```", "",
    ]
    return "\n".join(lines)
