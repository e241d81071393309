"""The plan: everything `sigen run` works out before it generates, checked before anything is
written; and what reaches the disk and the terminal of a run's command line."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from selfinstruct_local.config import RunConfig
from selfinstruct_local.errors import SigenError
from selfinstruct_local.plan import resolve_plan
from selfinstruct_local.progress import Reporter
from selfinstruct_local.redact import redact_argv, redact_url
from selfinstruct_local.run import resume_command
from tests.conftest import sigen
from tests.fake_openai import FakeOpenAIServer, completion
from tests.scripted import ScriptedEngine, scripted_completions, scripted_loop
from tests.test_magpie import MagpieEngine

CORPUS_EN = Path(__file__).parent / "fixtures" / "corpus_en"


def plan_for(tmp_path, **options):
    return resolve_plan(RunConfig(output=tmp_path / "run", **options), Reporter())


def test_the_plan_is_resolved_and_frozen(tmp_path, smollm2):
    plan = plan_for(tmp_path, corpus=CORPUS_EN, kinds="summary,plot", chapters="3,1-2")
    config = plan.config
    assert config.model == "smollm2-135m" and config.num_instructions == 20
    assert config.kinds == "plot,summary" and config.chapters == "1-3"
    assert config.passage_chars and config.seeds and len(config.seeds_sha256) == 64
    assert plan.corpus.passage_chars == config.passage_chars
    assert plan.engine.batch_size == 16 and plan.temperature == 0.7
    with pytest.raises(FrozenInstanceError):
        plan.config = config  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        config.num_instructions = 5  # type: ignore[misc]
    assert not (tmp_path / "run").exists()  # resolving writes nothing


@pytest.mark.parametrize(("options", "message"), [
    ({"kinds": "PLOT", "corpus": CORPUS_EN}, "did you mean 'plot'?"),
    ({"kinds": "", "corpus": CORPUS_EN}, "no kind given"),
    ({"chapters": "9", "corpus": CORPUS_EN}, "no passage in chapter 9"),
    ({"method": "evolve"}, "--method must be one of self-instruct, alpaca"),
    ({"max_repeats": 2}, "--max-repeats chooses what grounded generation draws on"),
    ({"method": "alpaca", "max_answer_tokens": 64}, "--method alpaca has no answer step"),
])
def test_refused_checks_leave_no_folder_behind(tmp_path, smollm2, options, message):
    with pytest.raises(SigenError, match=message):
        plan_for(tmp_path, **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "default"), [
    ({"method": "self-instruct"}, 320),
    ({"method": "self-instruct", "corpus": CORPUS_EN}, 320),
    ({"method": "evol"}, 320),
    ({"method": "magpie"}, 1024),
])
def test_max_answer_tokens_limits_each_methods_answers(tmp_path, smollm2, options, default):
    """The answer steps ask for the method's default, or for --max-answer-tokens; no other
    request of these methods asks for either."""
    def limits(root, **more):
        engine = MagpieEngine() if options["method"] == "magpie" else ScriptedEngine(fail=0.0)
        scripted_loop(root, engine, num_instructions=3, **options, **more).run()
        return {r.max_tokens for r in engine.sent}

    assert default in limits(tmp_path / "default")
    capped = limits(tmp_path / "capped", max_answer_tokens=40)
    assert 40 in capped and default not in capped


def test_an_output_that_cannot_be_a_run_directory_is_refused(tmp_path):
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(SigenError, match="is under .*afile.txt, which is a file"):
        resolve_plan(RunConfig(output=tmp_path / "afile.txt" / "sub"), Reporter())
    with pytest.raises(SigenError, match="afile.txt is a file"):
        resolve_plan(RunConfig(output=tmp_path / "afile.txt"), Reporter())
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("my thesis")
    (foreign / "instances.jsonl").write_text('{"a": 1}\n')  # another tool's, no manifest
    with pytest.raises(SigenError, match=r"holds files that no sigen run wrote \(instances.jsonl, "
                       r"chapter1.tex\)"):
        resolve_plan(RunConfig(output=foreign), Reporter())
    assert sorted(p.name for p in foreign.iterdir()) == ["chapter1.tex", "instances.jsonl"]
    assert (foreign / "instances.jsonl").read_text() == '{"a": 1}\n'


def test_a_seed_longer_than_the_context_is_refused_with_its_line(tmp_path, smollm2):
    seeds = tmp_path / "seeds.jsonl"
    rows = [{"instruction": "Name three colors you like.", "instances": []},
            {"instruction": "Summarize this. " + "word " * 200_000, "instances": []},
            {"instruction": "Count to ten in French.", "instances": []}]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SigenError, match=rf"{seeds}:2: seed task 'line_2' is over 1,024 tokens"):
        plan_for(tmp_path, seeds=seeds)
    rows[1]["instruction"] = "Explain this. " + "token " * 1500  # short enough to tokenize
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SigenError, match=rf"{seeds}:2: seed task 'line_2' is 1,50\d tokens"):
        plan_for(tmp_path, seeds=seeds)


def test_secrets_are_redacted_from_command_lines_and_urls():
    argv = ["sigen", "run", "--api-key", "sk-abc", "--api-key=sk-def",
            "--base-url", "http://me:pw@gpu01:8000/v1,http://gpu02:8000/v1", "-o", "my run"]
    assert redact_argv(argv) == [
        "sigen", "run", "--api-key", "***", "--api-key=***",
        "--base-url", "http://***@gpu01:8000/v1,http://gpu02:8000/v1", "-o", "my run"]
    assert redact_url("http://gpu01:8000/v1") == "http://gpu01:8000/v1"
    assert resume_command(Path("runs/my run")) == "sigen run --resume 'runs/my run'"


def test_the_api_key_and_url_credentials_never_reach_the_disk(tmp_path, smollm2):
    """A whole run through a server (the scripted engine behind a fake one on 127.0.0.1),
    given a key and a URL with credentials: neither is in any file of the run directory."""
    key, password = "sk-test-4f9b2c", "hunter2pw"
    out = tmp_path / "run with space"
    with FakeOpenAIServer(completions=scripted_completions()) as server:
        url = server.url.replace("http://", f"http://alice:{password}@")
        result = sigen("run", "--engine", "openai", "--base-url", url, "--api-key", key,
                       "-n", "3", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert key not in result.stderr + result.stdout and password not in result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert key not in text and password not in text, path
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["base_url"].startswith("http://***@127.0.0.1:")
    assert "--api-key '***'" in manifest["command"] or "--api-key ***" in manifest["command"]


def test_a_run_that_ends_with_nothing_because_the_engine_failed_says_so(tmp_path, smollm2):
    out = tmp_path / "run"
    with FakeOpenAIServer(completions=completion("")) as server:  # every answer empty
        result = sigen("run", "--engine", "openai", "--base-url", server.url, "-n", "2",
                       "--batch-size", "2", "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped with no instruction accepted: Stopping: 8 rounds")
    assert "engine.log" in last and f"sigen run --resume {out}" in last
    assert json.loads((out / "manifest.json").read_text())["status"] == "stopped"
