"""The progress reporters, fed a RunState and stage events as the Generator sends them."""

from __future__ import annotations

import io
from collections import Counter

from rich.console import Console

from selfinstruct_local.pipeline.state import RunState
from selfinstruct_local.progress import (
    LiveReporter,
    LogReporter,
    Reporter,
    make_reporter,
)

STAGES = ("bootstrap", "classify", "instances")


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_state() -> RunState:
    return RunState(
        round=1, accepted=1,
        reject_reasons=Counter(near_duplicate=5, too_short=2, blacklist=1, too_long=1,
                               starts_with_punctuation=1),
        instance_rejects=Counter(empty_output=2),
    )


def play_round(reporter: Reporter, state: RunState, clock: Clock) -> None:
    """Round 2 as the Generator reports it: attach at 10 s, three engine calls, 2 accepted."""
    clock.now = 10.0
    reporter.attach("runs/demo", state, 6, STAGES)
    state.round = 2
    for stage, requests, tokens, start, end in (("bootstrap", 4, 300, 10.0, 30.0),
                                                ("classify", 5, 20, 30.0, 35.0),
                                                ("instances", 5, 80, 35.0, 60.0)):
        clock.now = start
        reporter.stage_started(stage, requests)
        clock.now = end
        state.counts[f"{stage}_requests"] += requests
        state.counts[f"{stage}_tokens"] += tokens
        reporter.stage_finished(stage, tokens, 1.0)  # 400 tokens in 3 s of engine time
    state.accepted = 3
    clock.now = 65.0
    reporter.round_finished()


def test_log_lines_keep_the_round_format_and_show_life_during_long_calls():
    out, clock = io.StringIO(), Clock()
    reporter = LogReporter(out, clock=clock)
    reporter.log("Loading the model ...")
    play_round(reporter, make_state(), clock)
    lines = out.getvalue().splitlines()
    # Calls that start within 30 s of the last line print nothing; the instances call, 35 s
    # after "Loading", does. ETA: 2 accepted in the 55 s since attach, 3 to go.
    assert lines == [
        "Loading the model ...",
        "round 2: instances started, 5 requests, elapsed 0m35s",
        "round 2: 3/6 accepted, 10 rejected (near_duplicate 5, too_short 2, blacklist 1, "
        "too_long 1), 133 tok/s, elapsed 1m05s, ETA 1m22s",
    ]
    assert "\x1b" not in out.getvalue()


def test_no_eta_before_anything_is_accepted():
    out, clock = io.StringIO(), Clock()
    reporter = LogReporter(out, clock=clock)
    state = RunState()
    reporter.attach("runs/x", state, 5, STAGES)
    state.round = 1
    clock.now = 20.0
    reporter.round_finished()
    assert out.getvalue() == ("round 1: 0/5 accepted, 0 rejected (none), 0 tok/s, "
                              "elapsed 0m20s\n")


def test_quiet_shows_only_notices():
    out, clock = io.StringIO(), Clock()
    reporter = make_reporter(quiet=True, stream=out)
    assert type(reporter) is Reporter
    reporter.log("Loading the model ...")
    play_round(reporter, make_state(), clock)
    reporter.notice("Interrupted: resume with: sigen run --resume runs/demo")
    reporter.close()
    assert out.getvalue() == "Interrupted: resume with: sigen run --resume runs/demo\n"


def test_live_display_renders_every_part():
    clock = Clock()
    reporter = LiveReporter(Console(file=io.StringIO()), clock=clock)
    state = make_state()
    # No attach (it would start the display): the same events, without the refresh thread.
    reporter._state, reporter._run_dir, reporter._target = state, "runs/demo", 6
    reporter._stages, reporter._accepted_before = STAGES, 1
    state.round, state.counts["bootstrap_requests"], state.counts["bootstrap_tokens"] = 2, 4, 300
    reporter.stage_finished("bootstrap", 300, 2.0)
    state.accepted = 3
    clock.now = 40.0
    reporter.stage_started("instances", 9)

    def screen(now: float) -> str:
        clock.now = now
        console = Console(file=io.StringIO(), width=110, record=True)
        console.print(reporter.render())
        return console.export_text()

    text = screen(52.0)
    # ETA: 2 accepted in the 52 s since generation started, 3 to go.
    assert "sigen run runs/demo   round 2   elapsed 0m52s   ETA 1m18s" in text
    assert "150 tok/s" in text
    assert "accepted" in text and "3/6" in text
    assert ("rejected instructions: 10 (near_duplicate 5, too_short 2, blacklist 1, too_long 1, "
            "1 more)") in text
    assert "dropped instances: 2 (empty_output 2)" in text
    rows = {line.split()[0]: line for line in text.splitlines()
            if line.split() and line.split()[0] in STAGES}
    assert rows["bootstrap"].split() == ["bootstrap", "4", "300"]
    assert rows["classify"].split() == ["classify", "0", "0"]
    assert "running: 9 requests, 0m12s" in rows["instances"]
    # The clocks move with no event at all: the refresh thread redraws during a long call.
    later = screen(130.0)
    assert "elapsed 2m10s" in later and "running: 9 requests, 1m30s" in later


def test_live_display_on_a_terminal_prints_messages_above_it_and_stops():
    out, clock = io.StringIO(), Clock()
    reporter = LiveReporter(Console(file=out, force_terminal=True, width=100), clock=clock)
    reporter.log("Loading the model ...")  # before the display: a plain line
    play_round(reporter, make_state(), clock)
    reporter.log("Completing 2 instructions left in flight ...")
    reporter.close()
    reporter.close()  # idempotent: execute_run and the CLI both close it
    reporter.notice("Done: 3 instructions")
    text = out.getvalue()
    assert "\x1b[" in text  # cursor movement: the display is redrawn in place
    # The final frame (the last "3/6") stays on screen between the messages of the run and
    # what is printed after the display stopped.
    order = [text.index("Loading the model"), text.index("Completing 2 instructions"),
             text.rindex("3/6"), text.index("Done: 3 instructions")]
    assert order == sorted(order)
    assert text.rstrip().endswith("Done: 3 instructions")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_factory_follows_stderr(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    assert type(make_reporter(stream=io.StringIO())) is LogReporter
    assert type(make_reporter(stream=Terminal())) is LiveReporter
    monkeypatch.setenv("TERM", "dumb")  # cannot redraw in place
    assert type(make_reporter(stream=Terminal())) is LogReporter
