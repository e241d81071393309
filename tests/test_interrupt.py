"""Ctrl-C: the SIGINT handler on its own. `sigen run` given Ctrl-C as a terminal sends it, to the
whole process group (vLLM's engine and worker processes too), once and twice, is in
test_resume.py (one run directory stopped every way, then completed)."""

import signal

import pytest

from selfinstruct_local.interrupt import RunInterrupted, StopRequest


def test_first_ctrl_c_waits_for_a_safe_point_or_abandons_an_engine_call():
    # What was there before: Python's default handler, or SIG_IGN when the suite was started
    # in the background by a shell (which then ignores Ctrl-C for it).
    before = signal.getsignal(signal.SIGINT)
    messages = []
    with StopRequest(messages.append) as stop:
        signal.raise_signal(signal.SIGINT)  # between steps: only asks
        assert stop.requested and messages[-1].startswith("Stopping at the next safe point")
        with pytest.raises(RunInterrupted), stop.abortable():
            pass  # an engine call is not even started once a stop is asked for
    with StopRequest(messages.append) as stop:
        with pytest.raises(RunInterrupted), stop.abortable():
            signal.raise_signal(signal.SIGINT)  # during an engine call: at once
        assert messages[-1].startswith("Stopping now")
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second Ctrl-C
    assert signal.getsignal(signal.SIGINT) is before  # restored
