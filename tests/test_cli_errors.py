"""Errors a user will hit: one clear line on stderr, exit status 2, never a traceback.

None of these commands gets as far as loading a model, so they run `sigen`'s own entry point
(`selfinstruct_local.cli.main`) in this process, which saves a Python start-up per command."""

import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from selfinstruct_local.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def sigen(capsys, monkeypatch):
    """`sigen ARGS...` as the console script runs it, in this process: its exit status and what
    it printed. A traceback is printed to stderr as Python would, so the checks see it."""

    def call(*args: str, env: dict | None = None) -> Result:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "argv", ["sigen", *args])
        capsys.readouterr()
        try:
            main()
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
        except Exception:  # what the console script would show
            traceback.print_exc()
            status = 1
        out, err = capsys.readouterr()
        return Result(status, out, err)

    return call


def assert_clean_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr


def test_unknown_model_lists_known_ones(tmp_path, sigen):
    result = sigen("run", "--model", "no-such-model", "-o", str(tmp_path / "r"))
    assert_clean_error(result, "unknown model 'no-such-model'", "llama-7b", "smollm2-135m")


def test_missing_weights_say_how_to_get_them(tmp_path, sigen):
    result = sigen("run", "--model", "llama-7b", "-o", str(tmp_path / "r"),
                   env={"SIGEN_MODEL_DIR": str(tmp_path / "models")})
    assert_clean_error(result, "weights for 'llama-7b' are not at", "SIGEN_MODEL_DIR")


def test_too_many_gpus(tmp_path, sigen):
    # More than any machine has, so that the test never starts replicas where GPUs exist.
    result = sigen("run", "--gpus", "1024", "-o", str(tmp_path / "r"))
    assert_clean_error(result, "--gpus 1024 asked for more GPUs than are visible")
    assert not (tmp_path / "r").exists()


def test_malformed_seed_file_names_file_and_line(tmp_path, sigen):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Name three colors you like."}) + "\n{oops\n")
    result = sigen("run", "--seeds", str(seeds), "-o", str(tmp_path / "r"))
    assert_clean_error(result, f"{seeds}:2: not valid JSON")


def test_vllm_missing_names_the_extra(tmp_path, smollm2, sigen, monkeypatch):
    # `import vllm` fails, as on a machine without it.
    monkeypatch.setitem(sys.modules, "vllm", None)
    result = sigen("run", "-o", str(tmp_path / "r"), "-n", "1")
    assert_clean_error(result, "vLLM is not installed", "selfinstruct-local[gpu]",
                       "selfinstruct-local[cpu]", "--engine transformers")


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_help_documents_every_option():
    import typer

    from selfinstruct_local.cli import app

    found = dict(_commands(typer.main.get_command(app)))
    assert {("run",), ("dedup",), ("models", "list"), ("models", "prepare")} <= set(found)
    for path, command in found.items():
        assert command.help, path
        for param in command.params:
            if param.name != "help":
                assert (param.help or "").strip(), f"sigen {' '.join(path)}: {param.name}"


def test_run_help_prints(sigen):
    result = sigen("run", "--help")
    assert result.returncode == 0 and "--num-instructions" in result.stdout


def test_the_console_script_prints_one_line_without_a_traceback(tmp_path):
    """The same as the tests above, through a real `sigen` process (python -m): the exit status
    and the single line reach the shell."""
    from tests.conftest import sigen as sigen_process

    result = sigen_process("run", "--model", "no-such-model", "-o", str(tmp_path / "r"))
    assert_clean_error(result, "unknown model 'no-such-model'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_openai_engine_needs_a_base_url(tmp_path, sigen):
    result = sigen("run", "--engine", "openai", "-o", str(tmp_path / "r"))
    assert_clean_error(result, "--engine openai needs --base-url")


def test_openai_engine_takes_no_gpus(tmp_path, sigen):
    result = sigen("run", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1",
                   "--gpus", "2", "-o", str(tmp_path / "r"))
    assert_clean_error(result, "--gpus and --tensor-parallel are for engines that run the "
                       "model here")


def test_base_url_is_for_the_openai_engine(tmp_path, sigen):
    result = sigen("run", "--base-url", "http://127.0.0.1:9/v1", "-o", str(tmp_path / "r"))
    assert_clean_error(result, "--base-url is for --engine openai")


def test_no_server_listening_is_a_clear_error(tmp_path, sigen):
    from selfinstruct_local.engines.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = sigen("run", "--engine", "openai", "--base-url", url, "--server-timeout", "3",
                   "-o", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no server answered for 3 s ({url})")
    assert "--base-url is right" in last
    assert "Waiting for a server to answer" in result.stderr  # said while it waited


CORPUS_ZH = str(Path(__file__).parent / "fixtures" / "corpus_zh")


def test_grounding_options_need_a_corpus(tmp_path, sigen):
    for flag, value in (("--chapters", "1-2"), ("--kinds", "plot"), ("--max-repeats", "2")):
        result = sigen("run", flag, value, "-o", str(tmp_path / "r"))
        assert_clean_error(result, f"{flag} chooses what grounded generation draws on",
                           "--corpus")


def test_chapters_and_kinds_are_checked_before_the_model_loads(tmp_path, smollm2, sigen):
    out = str(tmp_path / "r")
    result = sigen("run", "--lang", "zh", "--corpus", CORPUS_ZH, "--chapters", "3-x", "-o", out)
    assert_clean_error(result, "--chapters", "81-120")
    result = sigen("run", "--lang", "zh", "--corpus", CORPUS_ZH, "--chapters", "7-9", "-o", out)
    assert_clean_error(result, "7-9", "4 chapters (1-4)")
    result = sigen("run", "--lang", "zh", "--corpus", CORPUS_ZH, "--kinds", "plot,poetry",
                   "-o", out)
    assert_clean_error(result, "poetry", "continuation", "inner_voice")
