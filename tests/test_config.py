"""Which run `sigen run` without --output continues, and settings inherited on resume."""

import json
from dataclasses import replace

import pytest

from selfinstruct_local.config import RunConfig, derived_from, latest_run_like
from selfinstruct_local.errors import SigenError


def write_run(runs, name, status, **config):
    run = runs / name
    run.mkdir(parents=True)
    base = RunConfig(model="smollm2-135m", seeds="seeds/en.jsonl", seeds_sha256="abc").to_json()
    manifest = {"status": status, "config": {**base, **config}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def new_config(**changes):
    return RunConfig(model="smollm2-135m", seeds="seeds/en.jsonl", seeds_sha256="abc", **changes)


def test_the_newest_run_with_the_same_settings_is_continued(tmp_path):
    runs = tmp_path / "runs"
    assert latest_run_like(new_config(), runs) is None  # no runs/ yet
    write_run(runs, "20261101-100000", "finished")
    killed = write_run(runs, "20261102-100000", "running")  # killed with kill -9
    write_run(runs, "20261104-100000", "running", lang="zh")
    write_run(runs, "20261105-100000", "running", seed=7)
    (runs / "20261106-100000").mkdir()  # no manifest: not a run
    (runs / "20261107-100000").mkdir()
    (runs / "20261107-100000" / "manifest.json").write_text("{torn")
    (runs / "notes.txt").write_text("x")
    assert latest_run_like(new_config(num_instructions=40), runs) == killed
    assert latest_run_like(new_config(method="alpaca"), runs) is None
    finished = write_run(runs, "20261108-100000", "finished")  # says so when run again
    assert latest_run_like(new_config(), runs) == finished


def test_a_derived_default_matches_and_is_inherited(tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "20261101-100000", "interrupted", corpus="hlm.txt", passage_chars=183)
    config = new_config(corpus="hlm.txt")  # --passage-chars not given: worked out by the run
    assert latest_run_like(config, runs) == run
    inherited = derived_from(config, json.loads((run / "manifest.json").read_text()))
    assert replace(config, **inherited).passage_chars == 183
    given = new_config(corpus="hlm.txt", passage_chars=300)  # given, and different: a new run
    assert latest_run_like(given, runs) is None
    assert derived_from(given, {"config": {"passage_chars": 183}}) == {}


def test_a_configuration_is_frozen_and_read_back_as_saved():
    config = new_config(corpus="hlm.txt", num_instructions=40, temperature=1)
    with pytest.raises(AttributeError):
        config.num_instructions = 50  # type: ignore[misc]
    assert RunConfig.from_json(config.to_json()).to_json() == config.to_json()
    later = {**config.to_json(), "from_a_later_version": 1}
    assert RunConfig.from_json(later).to_json() == config.to_json()


@pytest.mark.parametrize(("key", "value", "what"), [
    ("num_instructions", "20", 'config.num_instructions is "20", which is not a whole number'),
    ("judge", 1, "config.judge is 1, which is not true or false"),
    ("seed", None, "config.seed is null, which is not a whole number"),
    ("max_rounds", True, "config.max_rounds is true, which is not a whole number"),
    ("model", ["a"], 'config.model is ["a"], which is not a string'),
])
def test_a_saved_value_of_the_wrong_type_is_an_error(key, value, what):
    with pytest.raises(SigenError, match="manifest.json: " + what.replace("[", r"\[")):
        RunConfig.from_json({**new_config().to_json(), key: value})
