"""The generation loop's logic, driven by a scripted engine (tests/scripted.py): the target is
met exactly, retries, the stall stop, --max-rounds, resume after a kill at any point, the same
prompts for the same seed, and group commit. The real engines run the same loop in test_e2e,
test_resume, test_interrupt and test_server."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from selfinstruct_local.quality.gate import SCORES, task_ids
from selfinstruct_local.runstore import (
    GROUP_COMMIT_SECONDS,
    INSTANCES,
    INSTRUCTIONS,
    PENDING,
    REJECTED,
    RunStore,
)
from tests.scripted import Killed, ScriptedEngine, ScriptedStream, scripted_loop


def rows(root, name):
    path = root / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_finished(root, target):
    """The run's files are consistent and hold exactly `target` instructions."""
    finals = rows(root, INSTRUCTIONS)
    assert len(finals) == target
    assert len({r["id"] for r in finals}) == target
    assert len({r["instruction"] for r in finals}) == target
    instances = rows(root, INSTANCES)
    assert Counter(r["instruction_id"] for r in instances) == {
        r["id"]: r["num_instances"] for r in finals}
    pending = [r["id"] for r in rows(root, PENDING)]
    assert len(pending) == len(set(pending))
    rejected = {r["id"] for r in rows(root, REJECTED) if "id" in r}
    assert {r["id"] for r in finals} | rejected == set(pending)  # every task has one outcome
    return finals


@pytest.mark.parametrize("streamed", [False, True])
def test_the_target_is_met_exactly(tmp_path, streamed):
    engine = ScriptedEngine(fail=0.3)
    stream = ScriptedStream(engine, capacity=24, order_seed=3) if streamed else None
    loop = scripted_loop(tmp_path, engine, stream, num_instructions=37)
    accepted_at_submit = []
    submit = loop.stream.submit

    def record(key, request):
        accepted_at_submit.append(loop.state.accepted)
        submit(key, request)

    loop.stream.submit = record
    loop.run()
    check_finished(tmp_path, 37)
    assert loop.state.accepted == 37
    # Nothing is asked once the target is met: tasks still on their way end as target_reached.
    assert max(accepted_at_submit) < 37
    assert Counter(r["reason"] for r in rows(tmp_path, REJECTED))["target_reached"] > 0
    stages = Counter(r.assistant_prefix.split()[0] for r in engine.sent)
    assert stages["Classification:"] >= 37
    # 30% of instance answers fail: some tasks got a second (sampled) try, some none usable.
    reasons = Counter(r["reason"] for r in rows(tmp_path, REJECTED))
    assert reasons["no_valid_instances"] > 0 and reasons["empty_output"] > 0
    assert loop.stats.stage("instances").requests > loop.stats.stage("classify").requests


def test_follow_up_requests_share_batches_with_new_ones(tmp_path):
    """Streaming: a batch carries classify and instance requests for tasks accepted a moment
    ago together with bootstrap requests, rather than one batch per stage."""
    engine = ScriptedEngine(fail=0.0)
    batches = []
    generate = engine.generate

    def record(requests):
        batches.append({r.assistant_prefix.split()[0] for r in requests})
        return generate(requests)

    engine.generate = record
    scripted_loop(tmp_path, engine, num_instructions=30, batch_size=6).run()
    assert any(len(kinds) >= 2 for kinds in batches)


def test_the_stall_stop_and_max_rounds(tmp_path):
    stalled = scripted_loop(tmp_path / "a", ScriptedEngine(same_every_time=True),
                            num_instructions=50, batch_size=4)
    stalled.run()
    # The first answer's instructions are kept; every later answer repeats them.
    assert 0 < stalled.state.accepted < 50
    assert "added no instruction" in stalled.no_more_sources
    assert stalled.stats.source_requests <= 4 * 9 + 4

    engine = ScriptedEngine()
    limited = scripted_loop(tmp_path / "b", engine, num_instructions=500, batch_size=5,
                            max_rounds=2)
    limited.run()
    assert limited.stats.stage("bootstrap").requests == 10
    assert "--max-rounds 2" in limited.no_more_sources
    assert 0 < limited.state.accepted < 500
    assert max(r["round"] for r in rows(tmp_path / "b", INSTRUCTIONS)) <= 2


@pytest.mark.parametrize("kill_after", [0, 1, 2, 3, 5, 7, 9])
def test_a_kill_at_any_point_then_resume(tmp_path, kill_after):
    """The engine dies after `kill_after` batches: rows not yet committed are lost, as with
    kill -9; the resume (from the files and the last checkpoint's counters) finishes exactly
    the target, keeping everything that reached the disk."""
    first = scripted_loop(tmp_path, ScriptedEngine(kill_after=kill_after), num_instructions=25)
    with pytest.raises(Killed):
        first.run()
    before = rows(tmp_path, INSTRUCTIONS)
    resumed = scripted_loop(tmp_path, ScriptedEngine(), num_instructions=25)
    resumed.run()
    final = check_finished(tmp_path, 25)
    assert all(row in final for row in before)


def check_judged(root):
    """Every task of the run has exactly one score row, by its id, and an unreadable score
    only after a second (sampled) ask."""
    scores = rows(root, SCORES)
    ids = task_ids(rows(root, INSTANCES))
    assert sorted(r["id"] for r in scores) == sorted(ids)  # each once, none for a lost row
    assert all(r["attempts"] == 2 for r in scores if r["score"] is None)
    assert all(r["score"] in range(1, 6) for r in scores if r["score"] is not None)
    return scores


@pytest.mark.parametrize("streamed", [False, True])
def test_judged_as_the_run_goes(tmp_path, streamed):
    """`sigen run --judge`: each instance written is scored by one more request, an unreadable
    reply asked once more; judge requests share batches with the generation's own."""
    engine = ScriptedEngine(fail=0.5)  # half the replies unreadable: some twice
    stream = ScriptedStream(engine, capacity=24, order_seed=2) if streamed else None
    loop = scripted_loop(tmp_path, engine, stream, judge=True, num_instructions=20)
    loop.run()
    check_finished(tmp_path, 20)
    scores = check_judged(tmp_path)
    retried = sum(r["attempts"] - 1 for r in scores)
    assert retried > 0 and any(r["score"] is None for r in scores)
    assert loop.stats.stage("judge").requests == len(scores) + retried
    assert loop.stats.judged == len(scores)
    assert "judge" in [stage for stage, *_ in loop.snapshot().stages]
    sent = [r.assistant_prefix.split()[0] for r in engine.sent]
    # Scoring starts while tasks are still being generated, not after the last one.
    assert sent.index("Score:") < max(i for i, p in enumerate(sent) if p != "Score:")


@pytest.mark.parametrize("kill_after", [2, 4, 6, 8])
def test_a_kill_while_judging_then_resume(tmp_path, kill_after):
    """A kill loses at most the scores in flight; the resume scores every task left, and none
    twice."""
    first = scripted_loop(tmp_path, ScriptedEngine(kill_after=kill_after), judge=True,
                          num_instructions=15)
    with pytest.raises(Killed):
        first.run()
    before = rows(tmp_path, SCORES)
    scripted_loop(tmp_path, ScriptedEngine(), judge=True, num_instructions=15).run()
    check_finished(tmp_path, 15)
    assert all(row in check_judged(tmp_path) for row in before)


def test_judge_added_on_resume_scores_the_finished_tasks(tmp_path):
    scripted_loop(tmp_path, ScriptedEngine(), num_instructions=12).run()
    assert not rows(tmp_path, SCORES)
    engine = ScriptedEngine()
    scripted_loop(tmp_path, engine, judge=True, num_instructions=12).run()
    check_finished(tmp_path, 12)
    check_judged(tmp_path)
    assert {r.assistant_prefix.split()[0] for r in engine.sent} == {"Score:"}


def test_the_same_seed_sends_the_same_prompts_in_the_same_order(tmp_path):
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        engine = ScriptedEngine()
        scripted_loop(tmp_path / name, engine, num_instructions=15, seed=seed).run()
        runs.append([(r.prompt, r.assistant_prefix, r.seed) for r in engine.sent])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert rows(tmp_path / "a", INSTRUCTIONS) == rows(tmp_path / "b", INSTRUCTIONS)


def test_the_alpaca_method_runs_on_the_same_loop(tmp_path):
    class AlpacaEngine(ScriptedEngine):
        def answer(self, request):
            rng = __import__("random").Random(request.seed)
            # The answer continues "Task 4\nInstruction:", as in alpaca.py's parser.
            blocks = [f" {self.instruction(rng)}\nInput: <none>\n"
                      f"Output: A plain answer number {rng.randint(1, 999)}.\n"]
            blocks += [f"Task {k}\nInstruction: {self.instruction(rng)}\nInput: <none>\n"
                       f"Output: A plain answer number {rng.randint(1, 999)}.\n"
                       for k in range(5, 9)]
            return self.complete("\n".join(blocks))

        @staticmethod
        def complete(text):
            from selfinstruct_local.engines import Completion

            return Completion(text, "stop", 500, 100)

    loop = scripted_loop(tmp_path, AlpacaEngine(), method="alpaca", num_instructions=12)
    loop.run()
    finals = check_finished(tmp_path, 12)
    assert all(r["is_classification"] is None for r in finals)
    assert loop.method.stages == ("alpaca",)


def test_group_commit_writes_in_order_with_one_fsync_per_file(tmp_path):
    now = [0.0]
    store = RunStore(tmp_path, group_commit=True, clock=lambda: now[0])
    store.append(INSTRUCTIONS, [{"id": "mi-1"}])
    store.append(INSTANCES, [{"instruction_id": "mi-1"}])
    store.append(PENDING, [{"id": "mi-2"}])
    assert not (tmp_path / INSTRUCTIONS).exists()  # nothing written yet
    now[0] = GROUP_COMMIT_SECONDS
    store.append(PENDING, [{"id": "mi-3"}])  # due: everything goes
    assert [r["id"] for r in rows(tmp_path, PENDING)] == ["mi-2", "mi-3"]
    assert rows(tmp_path, INSTRUCTIONS) == [{"id": "mi-1"}]
    store.append(REJECTED, [{"id": "x"}])
    assert not (tmp_path / REJECTED).exists()
    store.flush()
    assert rows(tmp_path, REJECTED) == [{"id": "x"}]
