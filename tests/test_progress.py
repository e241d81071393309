"""The progress reporters, fed Snapshots as the generation loop sends them."""

from __future__ import annotations

import io

from rich.console import Console

from selfinstruct_local.progress import (
    LiveReporter,
    LogReporter,
    Reporter,
    Snapshot,
    make_reporter,
)

REJECTED = (("near_duplicate", 5), ("too_short", 2), ("blacklist", 1), ("too_long", 1),
            ("starts_with_punctuation", 1))


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snap(round_=1, accepted=1, bootstrap=(0, 0, 0), classify=(0, 0, 0), instances=(0, 0, 0),
         rejected=REJECTED) -> Snapshot:
    return Snapshot(round=round_, accepted=accepted, rejected=rejected,
                    dropped=(("empty_output", 2),),
                    stages=(("bootstrap", *bootstrap), ("classify", *classify),
                            ("instances", *instances)))


def play_round(reporter: Reporter, clock: Clock) -> None:
    """Round 2 as the loop reports it: attach at 10 s, updates as completions come back, 2
    more accepted, 400 tokens in the 55 s since attach."""
    clock.now = 10.0
    reporter.attach("runs/demo", 6, snap())
    for now, update in ((20.0, snap(2, 1, (4, 0, 4))),
                        (30.0, snap(2, 1, (4, 300, 0), (5, 0, 5))),
                        (46.0, snap(2, 2, (4, 300, 0), (5, 20, 0), (5, 0, 5)))):
        clock.now = now
        reporter.update(update)
    clock.now = 65.0
    reporter.round_finished(snap(2, 3, (4, 300, 0), (5, 20, 0), (5, 80, 0)))


def test_log_lines_keep_the_round_format_and_show_life_during_long_waits():
    out, clock = io.StringIO(), Clock()
    reporter = LogReporter(out, clock=clock)
    reporter.log("Loading the model ...")
    play_round(reporter, clock)
    lines = out.getvalue().splitlines()
    # Updates within 30 s of the last line print nothing; the one 46 s after "Loading" does.
    # ETA: 2 accepted in the 55 s since attach, 3 to go.
    assert lines == [
        "Loading the model ...",
        "round 2: 2/6 accepted, requests in flight: instances 5, elapsed 0m46s",
        "round 2: 3/6 accepted, 10 rejected (near_duplicate 5, too_short 2, blacklist 1, "
        "too_long 1), 7 tok/s, elapsed 1m05s, ETA 1m22s",
    ]
    assert "\x1b" not in out.getvalue()


def test_no_eta_before_anything_is_accepted():
    out, clock = io.StringIO(), Clock()
    reporter = LogReporter(out, clock=clock)
    reporter.attach("runs/x", 5, snap(0, 0, rejected=()))
    clock.now = 20.0
    reporter.round_finished(snap(1, 0, rejected=()))
    assert out.getvalue() == ("round 1: 0/5 accepted, 0 rejected (none), 0 tok/s, "
                              "elapsed 0m20s\n")


def test_quiet_shows_only_notices():
    out, clock = io.StringIO(), Clock()
    reporter = make_reporter(quiet=True, stream=out)
    assert type(reporter) is Reporter
    reporter.log("Loading the model ...")
    play_round(reporter, clock)
    reporter.notice("Interrupted: resume with: sigen run --resume runs/demo")
    reporter.close()
    assert out.getvalue() == "Interrupted: resume with: sigen run --resume runs/demo\n"


def test_live_display_renders_every_part():
    clock = Clock()
    reporter = LiveReporter(Console(file=io.StringIO()), clock=clock)
    # The base class's attach: the same events, without starting the refresh thread.
    Reporter.attach(reporter, "runs/demo", 6, snap())
    clock.now = 40.0
    reporter.update(snap(2, 3, (4, 300, 0), (5, 20, 0), (9, 0, 9)))

    def screen(now: float) -> str:
        clock.now = now
        console = Console(file=io.StringIO(), width=110, record=True)
        console.print(reporter.render())
        return console.export_text()

    text = screen(52.0)
    # ETA: 2 accepted in the 52 s since generation started, 3 to go.
    assert "sigen run runs/demo   round 2   elapsed 0m52s   ETA 1m18s" in text
    assert "8 tok/s" in text  # 320 tokens in the 40 s since attach
    assert "accepted" in text and "3/6" in text
    assert ("rejected instructions: 10 (near_duplicate 5, too_short 2, blacklist 1, too_long 1, "
            "1 more)") in text
    assert "dropped instances: 2 (empty_output 2)" in text
    rows = {line.split()[0]: line for line in text.splitlines()
            if line.split() and line.split()[0] in ("bootstrap", "classify", "instances")}
    assert rows["bootstrap"].split() == ["bootstrap", "4", "300"]
    assert rows["classify"].split() == ["classify", "5", "20"]
    assert rows["instances"].split() == ["instances", "9", "0", "9"]
    # The clock moves with no event at all: the refresh thread redraws during a long wait.
    later = screen(130.0)
    assert "elapsed 2m10s" in later


def test_live_display_on_a_terminal_prints_messages_above_it_and_stops():
    out, clock = io.StringIO(), Clock()
    reporter = LiveReporter(Console(file=out, force_terminal=True, width=100), clock=clock)
    reporter.log("Loading the model ...")  # before the display: a plain line
    play_round(reporter, clock)
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
