"""Seed tasks in the Self-Instruct JSONL format, read strictly with file-and-line errors.

One task per line: {"id", "name", "instruction", "instances": [{"input", "output"}],
"is_classification"}. `id` and `name` may be missing (they are made up from the line number);
everything else must be there with the right type, because a silently skipped seed changes what
the model is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.resources import project_file
from selfinstruct_local.tokenizer import local_tokenizer

DEFAULT_SEEDS = {lang: project_file(f"seeds/{lang}_seed_tasks.jsonl") for lang in ("en", "zh")}


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclass(frozen=True)
class Task:
    id: str
    instruction: str
    instances: tuple[Instance, ...] = ()
    is_classification: bool | None = None
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    line: int = field(default=0, compare=False)  # where it is in its file (1-based)


def default_seed_path(lang: str) -> Path:
    path = DEFAULT_SEEDS.get(lang)
    if path is None or not path.is_file():
        raise SigenError(f"no built-in seed tasks for language {lang!r}; pass --seeds PATH")
    return path


def load_seed_tasks(path: Path) -> list[Task]:
    path = Path(path)
    if not path.is_file():
        raise SigenError(f"seed file {path} does not exist")
    tasks: list[Task] = []
    seen_ids: dict[str, int] = {}
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SigenError(
            f"{path}:{line}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
        ) from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        task = _parse_line(path, lineno, line)
        if task.id in seen_ids:
            raise SigenError(
                f"{path}:{lineno}: id {task.id!r} already used on line {seen_ids[task.id]}; "
                "give every task a unique id"
            )
        seen_ids[task.id] = lineno
        tasks.append(task)
    if not tasks:
        raise SigenError(f"{path}: no seed tasks in the file")
    return tasks


def _parse_line(path: Path, lineno: int, line: str) -> Task:
    where = f"{path}:{lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SigenError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
            "each line must be one JSON object"
        ) from None
    if not isinstance(row, dict):
        raise SigenError(f"{where}: expected a JSON object, got {type(row).__name__}")
    instruction = row.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise SigenError(f"{where}: 'instruction' is missing or not a non-empty string")
    instances_raw = row.get("instances", [])
    if not isinstance(instances_raw, list):
        raise SigenError(f"{where}: 'instances' must be a list of {{input, output}} objects")
    instances = []
    for k, inst in enumerate(instances_raw):
        if not isinstance(inst, dict):
            raise SigenError(f"{where}: instances[{k}] is not an object with input and output")
        inp, out = inst.get("input", ""), inst.get("output")
        if not isinstance(inp, str) or not isinstance(out, str):
            raise SigenError(f"{where}: instances[{k}] needs string 'input' and 'output' fields")
        instances.append(Instance(input=inp, output=out))
    is_cls = row.get("is_classification")
    if is_cls is not None and not isinstance(is_cls, bool):
        raise SigenError(f"{where}: 'is_classification' must be true or false, not {is_cls!r}")
    task_id = row.get("id", f"line_{lineno}")
    if not isinstance(task_id, str | int):
        raise SigenError(f"{where}: 'id' must be a string")
    return Task(
        id=str(task_id),
        name=str(row.get("name", "")),
        instruction=instruction.strip(),
        instances=tuple(instances),
        is_classification=is_cls,
        line=lineno,
    )


# No token of a real tokenizer spans more characters than this: a text of more characters than
# this many times the limit is too long without being tokenized (a 50 MB line would take minutes).
MAX_CHARS_PER_TOKEN = 16


def check_seed_lengths(tasks: tuple[Task, ...] | list[Task], path: Path,
                       tokenizer_dir: Path | None, max_tokens: int) -> None:
    """Refuse a seed task (instruction, input and output) longer than `max_tokens` of the
    model's tokenizer: a prompt shows it beside other tasks and must leave room for the reply,
    and a prompt over the model's context fails every request it is in. Without a checkpoint
    here (a model only a server has), the character bound alone is checked."""
    count = _token_counter(tokenizer_dir)
    for task in tasks:
        text = "\n".join([task.instruction, *(f"{i.input}\n{i.output}" for i in task.instances)])
        if len(text) > MAX_CHARS_PER_TOKEN * max_tokens:
            tokens = f"over {max_tokens:,}"
        elif count is not None and (n := count(text)) > max_tokens:
            tokens = f"{n:,}"
        else:
            continue
        raise SigenError(
            f"{path}:{task.line}: seed task {task.id!r} is {tokens} tokens long ({len(text):,} "
            f"characters); a seed task must stay within {max_tokens:,} tokens, half the model's "
            "context, to fit in a prompt beside others with room for the reply. Shorten it or "
            "remove it.")


def _token_counter(tokenizer_dir: Path | None):
    if tokenizer_dir is None:
        return None
    tokenizer = local_tokenizer(tokenizer_dir)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
