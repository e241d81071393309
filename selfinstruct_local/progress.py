"""Progress of `sigen run` on stderr: a live display on a terminal, log lines otherwise.

execute_run and the generation loop talk to one interface, `Reporter`; `make_reporter` picks the
implementation: `LiveReporter` when stderr is a terminal, `LogReporter` when it is a file or a pipe
(CI, nohup), and the base class itself for --quiet. Messages (loading, resuming, done) go through
the reporter too, so that they are printed above a live display instead of through it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

LINE_GAP = 30.0  # seconds without a log line after which a stage start is logged
TOP_REASONS = 4


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@dataclass(frozen=True)
class Snapshot:
    """What the loop reports: copied from its counters on the main thread, so the live
    display's refresh thread never iterates counters the pipeline is updating."""

    round: int
    accepted: int
    rejected: tuple[tuple[str, int], ...] = ()  # instructions, by reason, most common first
    dropped: tuple[tuple[str, int], ...] = ()  # instances, by reason
    # (stage, requests sent, tokens generated, requests in flight now)
    stages: tuple[tuple[str, int, int, int], ...] = ()

    @property
    def tokens(self) -> int:
        return sum(t for _, _, t, _ in self.stages)


@dataclass(frozen=True)
class View:
    """A snapshot with what the reporter adds: the run, the target, the clock and the rates."""

    run_dir: str
    target: int
    snap: Snapshot
    tokens_per_second: float  # tokens generated per second since this process started work
    started: float  # when the command started: elapsed
    attached: float  # when generation started in this process, and
    accepted_before: int  # how many were accepted then: the rate behind the ETA

    @property
    def round(self) -> int:
        return self.snap.round

    @property
    def accepted(self) -> int:
        return self.snap.accepted

    def elapsed(self, now: float) -> float:
        return now - self.started

    def eta(self, now: float) -> float | None:
        """Seconds to the target at this process's rate (a resumed run's earlier work, and the
        model load, would make it look faster or slower than it is); None before any evidence."""
        if self.accepted >= self.target:
            return 0.0
        done = self.accepted - self.accepted_before
        return (self.target - self.accepted) * (now - self.attached) / done if done > 0 else None


def progress_line(view: View, now: float) -> str:
    """One line per round for logs: the format `sigen run` has always printed."""
    rejected = view.snap.rejected
    rejects = ", ".join(f"{k} {v}" for k, v in rejected[:TOP_REASONS])
    eta = view.eta(now)
    return (f"round {view.round}: {view.accepted}/{view.target} accepted, "
            f"{sum(n for _, n in rejected)} rejected ({rejects or 'none'}), "
            f"{view.tokens_per_second:.0f} tok/s, elapsed {clock(view.elapsed(now))}"
            + (f", ETA {clock(eta)}" if eta is not None else ""))


class Reporter:
    """Shows no progress and no informational messages (--quiet); `notice` still prints.

    The other reporters extend it. Events: `attach` once the engine is loaded, then `update`
    with a Snapshot as completions come back, `round_finished` after each round (and at the
    end), and `close` at the end (idempotent; messages after it print as plain lines).
    """

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.view: View | None = None
        self._run_dir = ""
        self._target = 0
        self._attached = self.started
        self._accepted_before = 0
        self._tokens_before: int | None = None

    # -- messages --------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """An informational message (loading, resuming, done): silenced by --quiet."""

    def notice(self, message: str) -> None:
        """A message printed even with --quiet: warnings, and how to resume after a stop."""
        self._print(message)

    def _print(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    # -- events ----------------------------------------------------------------------------
    def attach(self, run_dir: Path | str, target: int, first: Snapshot) -> None:
        """Start following a run whose engine is loaded, as it is now (`first`)."""
        self._run_dir, self._target = str(run_dir), target
        self._attached, self._accepted_before = self.clock(), first.accepted
        self._tokens_before = first.tokens
        self.update(first)

    def update(self, snap: Snapshot) -> None:
        now = self.clock()
        tokens = snap.tokens - (self._tokens_before or 0)
        self.view = View(
            run_dir=self._run_dir, target=self._target, snap=snap,
            tokens_per_second=tokens / (now - self._attached) if now > self._attached else 0.0,
            started=self.started, attached=self._attached,
            accepted_before=self._accepted_before)

    def round_finished(self, snap: Snapshot) -> None:
        self.update(snap)

    def close(self) -> None:
        pass


class LogReporter(Reporter):
    """Plain lines for logs: one per round, plus a line after a long silence, so that a nohup
    log shows the run is alive while the engine works."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream, clock)
        self._last_line = self.started

    def log(self, message: str) -> None:
        self._print(message)

    def _print(self, message: str) -> None:
        super()._print(message)
        self._last_line = self.clock()

    def update(self, snap: Snapshot) -> None:
        super().update(snap)
        now = self.clock()
        running = ", ".join(f"{s} {n}" for s, _, _, n in snap.stages if n)
        if running and self.view is not None and now - self._last_line > LINE_GAP:
            self._print(f"round {snap.round}: {snap.accepted}/{self._target} accepted, "
                        f"requests in flight: {running}, "
                        f"elapsed {clock(self.view.elapsed(now))}")

    def round_finished(self, snap: Snapshot) -> None:
        super().round_finished(snap)
        if self.view is not None:
            self._print(progress_line(self.view, self.clock()))


class LiveReporter(Reporter):
    """A display redrawn in place on a terminal. rich refreshes it on its own thread, so elapsed
    time and the running stage's clock tick while the main thread waits on a long engine call."""

    def __init__(self, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console if console is not None else Console(stderr=True)
        super().__init__(self.console.file, clock)
        self._live: Live | None = None

    def log(self, message: str) -> None:
        self._print(message)

    def _print(self, message: str) -> None:
        # Through the console: while the display is live, rich prints above it. soft_wrap keeps
        # a long path (the resume command) in one piece for copying.
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def attach(self, run_dir: Path | str, target: int, first: Snapshot) -> None:
        super().attach(run_dir, target, first)
        self._live = Live(get_renderable=self.render, console=self.console,
                          refresh_per_second=2, transient=False)
        self._live.start()

    def close(self) -> None:
        # The last frame stays on screen; what is printed afterwards goes below it.
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    def render(self) -> RenderableType:
        view, now = self.view, self.clock()
        if view is None:
            return Text("")
        eta = view.eta(now)
        header = Text.assemble(
            ("sigen run ", "bold"), view.run_dir,
            f"   round {view.round}   elapsed {clock(view.elapsed(now))}"
            f"   ETA {clock(eta) if eta is not None else '-'}"
            f"   {view.tokens_per_second:.0f} tok/s")
        bar = Table.grid(padding=(0, 1))
        bar.add_row("accepted", ProgressBar(total=max(view.target, 1), completed=view.accepted,
                                            width=40), f"{view.accepted}/{view.target}")
        stages = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="dim")
        for name, justify in (("stage", "left"), ("requests", "right"), ("tokens", "right"),
                              ("in flight", "right")):
            stages.add_column(name, justify=justify)  # type: ignore[arg-type]
        for stage, requests, tokens, running in view.snap.stages:
            stages.add_row(stage, f"{requests:,}", f"{tokens:,}",
                           Text(f"{running:,}" if running else "", style="bold cyan"))
        return Group(header, bar, _reasons("rejected instructions", view.snap.rejected),
                     _reasons("dropped instances", view.snap.dropped), stages)


def _reasons(title: str, reasons: tuple[tuple[str, int], ...]) -> Text:
    total = sum(n for _, n in reasons)
    top = ", ".join(f"{k} {v}" for k, v in reasons[:TOP_REASONS])
    more = len(reasons) - TOP_REASONS
    # Cut at the terminal's edge rather than wrapped: the display keeps its height, and every
    # reason is in manifest.json anyway.
    return Text(f"{title}: {total}" + (f" ({top}{f', {more} more' if more > 0 else ''})"
                                       if top else ""), no_wrap=True, overflow="ellipsis")


def make_reporter(quiet: bool = False, stream: TextIO | None = None) -> Reporter:
    """Live display when `stream` (stderr) is a terminal, log lines otherwise; --quiet: neither."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return Reporter(stream)
    console = Console(file=stream)
    # A dumb terminal (TERM=dumb, as in an editor's shell) cannot redraw: rich would show the
    # display only once, at the end.
    if stream.isatty() and not console.is_dumb_terminal:
        return LiveReporter(console)
    return LogReporter(stream)
