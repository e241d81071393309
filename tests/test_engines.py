"""The transformers engine on the packaged model, through the same interface the pipeline uses."""

import pytest

from selfinstruct_local.engines import Request
from selfinstruct_local.engines.base import render_prompt

pytestmark = pytest.mark.engine


@pytest.fixture
def engine(transformers_engine):
    """The session's transformers engine (conftest.py): seed 7, forward batches of 2."""
    return transformers_engine


def test_chat_prompt_rendering_starts_the_reply(engine):
    request = Request(prompt="List two fruits.", assistant_prefix="Task 9:")
    text = render_prompt(engine.tokenizer, "chat", request)
    assert text.endswith("<|im_start|>assistant\nTask 9:")
    assert "List two fruits." in text
    assert render_prompt(engine.tokenizer, "completion", request) == "List two fruits.Task 9:"


def test_generate_a_batch(engine):
    requests = [
        Request(prompt="Name three colors.", max_tokens=24, temperature=0.0),
        Request(prompt="Count from one to twenty in words, separated by commas.",
                max_tokens=6, temperature=0.0),
        Request(prompt="Write a list of tasks.", assistant_prefix="Task 1:", max_tokens=48,
                temperature=0.7, top_p=0.9, seed=11, stop=("Task 3",)),
    ]
    completions = engine.generate(requests)
    assert len(completions) == 3
    short = completions[1]
    assert short.finish_reason == "length" and short.completion_tokens == 6
    for c in completions:
        assert c.text.strip() and c.prompt_tokens > 5 and c.completion_tokens > 0
    assert "Task 3" not in completions[2].text  # stop strings are cut, as vLLM does
    assert engine.stats.requests == 3 and engine.stats.completion_tokens >= 6


def test_seeded_sampling_is_reproducible(engine):
    request = Request(prompt="Invent a name for a cat.", max_tokens=12, temperature=1.0, seed=5)
    assert engine.generate([request])[0].text == engine.generate([request])[0].text


def test_per_request_seeds_whatever_the_batch(engine):
    """A sampled request's text follows from its own seed, not from its place in the batch."""
    cat5 = Request(prompt="Invent a name for a cat.", max_tokens=12, temperature=1.0, seed=5)
    dog = Request(prompt="Invent a name for a dog.", max_tokens=12, temperature=1.0, seed=6,
                  top_p=0.9)
    cat7 = Request(prompt="Invent a name for a cat.", max_tokens=12, temperature=1.0, seed=7)
    forward = [c.text for c in engine.generate([cat5, dog, cat7])]
    backward = [c.text for c in engine.generate([cat7, dog, cat5])]
    assert forward == backward[::-1]
    assert forward[0] != forward[2]  # the same prompt with another seed


def test_batch_size_is_the_forward_batch(engine):
    assert engine.batch_size == 2
    requests = [Request(prompt=f"Say the number {i}.", max_tokens=4) for i in range(3)]
    assert len(engine.generate(requests)) == 3  # two forward batches: 2 + 1
