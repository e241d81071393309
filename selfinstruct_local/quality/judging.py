"""`sigen judge`: a local model rates every task of a finished run from 1 to 5.

Tasks go to the engine in batches; each batch's scores are appended to scores.jsonl (fsynced)
as soon as it is done, so a kill loses at most one batch, and the same command continues with
the tasks that have no row yet. A reply without a readable score is asked once more with
sampling; if that fails too, the task gets a row with `"score": null` (counted as unparsed,
not asked again unless --retry-unparsed). One judge per scores.jsonl: the histogram and
--min-score would mean nothing if two judges' scales were mixed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.engines.setup import (
    EngineRequest,
    load_engine,
    resolve_engine,
    resolve_model,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.interrupt import ServerUnavailable
from selfinstruct_local.progress import Reporter
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.quality.gate import SCORES, claim_run, unjudged_tasks
from selfinstruct_local.quality.judge import TaskJudge
from selfinstruct_local.runstore import RunStore, load_run


@dataclass
class JudgeSettings:
    """`sigen judge`'s options; None means: as the run was generated (its model, engine,
    servers, language), or the engine's default."""

    model: str | None = None
    models_file: Path | None = None
    engine: str | None = None
    gpus: int | None = None
    tensor_parallel: int | None = None
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int | None = None
    server_timeout: float | None = None
    batch_size: int | None = None
    seed: int = 42
    lang: str | None = None
    retry_unparsed: bool = False


def judge_run(run_dir: Path | str, settings: JudgeSettings, reporter: Reporter) -> Counter:
    """Score the run's unscored tasks; returns this call's counts (scores 1-5 and
    "unparsed")."""
    run = load_run(run_dir, reporter.notice)
    claim_run(run.root, "judge")
    store = RunStore(run.root)
    saved = run.manifest.get("config") or {}
    request = engine_request(settings, saved)
    entry, spec = resolve_model(request)
    prompts = load_prompts(settings.lang or saved.get("lang") or "en")
    tasks = unjudged_tasks(run.root, spec.name, reporter.notice, run.instances,
                           settings.retry_unparsed)
    done = Counter()
    if not tasks:
        reporter.log(f"All {len(run.instances)} tasks of {run.root} are judged already; "
                     "nothing to do.")
        return done
    store.repair(SCORES)  # a torn last line (a judge killed mid-write): appends start clean
    # An openai batch needs no more prompts than there are tasks.
    plan = resolve_engine(request, entry, spec, reporter, settings.api_key, len(tasks))
    reporter.log(f"Judging {len(tasks)} of {len(run.instances)} tasks with {spec.name} ...")
    judge = TaskJudge(prompts, spec.name, spec.max_model_len, settings.seed)
    engine = load_engine(plan, reporter, run.root)
    interrupted = False
    try:
        size = plan.batch_size
        for start in range(0, len(tasks), size):
            rows = judge_batch(engine, judge, tasks[start:start + size])
            store.append(SCORES, rows)
            done.update("unparsed" if r["score"] is None else r["score"] for r in rows)
            reporter.log(f"judged {min(start + size, len(tasks))}/{len(tasks)} "
                         f"({done['unparsed']} unparsed)")
    except ServerUnavailable as exc:
        raise SigenError(f"stopped: {exc}. The scores so far are kept; run the same command "
                         "again once a server answers.") from None
    except KeyboardInterrupt:
        interrupted = True  # a second Ctrl-C should not wait for the engine either
        raise
    finally:
        engine.close(wait=not interrupted)
    return done


def judge_batch(engine, judge: TaskJudge, tasks: list[tuple[str, dict]]) -> list[dict]:
    """One engine call for the batch, one more for the replies that could not be read."""
    rows: dict[str, dict] = {}
    todo, attempt = tasks, 1
    while todo:
        requests = [judge.request(ident, row, attempt) for ident, row in todo]
        completions = engine.generate(requests)
        for (ident, row), completion in zip(todo, completions, strict=True):
            scored = judge.row(ident, row, completion.text, attempt)
            if scored is not None:
                rows[ident] = scored
        todo, attempt = [(i, row) for i, row in todo if i not in rows], attempt + 1
    return [rows[ident] for ident, _ in tasks]


def engine_request(settings: JudgeSettings, saved: dict) -> EngineRequest:
    """The judge's engine: what `sigen judge` was given, and what it leaves unset from the
    run's configuration (its servers only for the same engine)."""
    engine = settings.engine or saved.get("engine") or "vllm"
    same_engine = engine == saved.get("engine")
    models_file = settings.models_file or saved.get("models_file")
    return EngineRequest(
        model=settings.model or saved.get("model"),
        models_file=Path(models_file) if models_file else None,
        engine=engine, gpus=settings.gpus, tensor_parallel=settings.tensor_parallel,
        base_url=settings.base_url or (saved.get("base_url") if same_engine else None),
        concurrency=settings.concurrency, server_timeout=settings.server_timeout,
        seed=settings.seed, batch_size=settings.batch_size)
