"""transformers engine: the fallback where vLLM is not installed. Batched, left-padded `generate`.

Requests with the same sampling settings are generated together in chunks of `batch_size`
(`--batch-size`, default 16); stop strings end a sequence (and are cut from the text, as vLLM
does); each request samples with its own seed (PerRequestSampler).
"""

from __future__ import annotations

import time
from itertools import groupby

from selfinstruct_local.engines.base import (
    Completion,
    EngineOptions,
    EngineStats,
    Request,
    cpu_dtype,
    render_prompt,
)
from selfinstruct_local.models import ModelSpec

_DTYPES = {"bfloat16", "float16", "float32"}


class TransformersEngine:
    name = "transformers"

    def __init__(self, spec: ModelSpec, options: EngineOptions) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.stats = EngineStats()
        gpus = options.gpus
        self.seed = options.seed
        self.batch_size = options.batch_size
        self._torch = torch
        self.device = "cuda" if gpus > 0 else "cpu"
        name = spec.dtype if gpus > 0 else cpu_dtype(spec.dtype)
        self.stats.extra["dtype"] = name
        dtype = getattr(torch, name) if name in _DTYPES else "auto"
        start = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs: dict[str, object] = {"dtype": dtype}
        if gpus > 1:
            kwargs["device_map"] = "auto"
        self.model = AutoModelForCausalLM.from_pretrained(spec.path, **kwargs)
        if gpus <= 1:
            self.model.to(self.device)
        self.model.eval()
        self.stats.load_seconds = time.perf_counter() - start

    def render(self, request: Request) -> str:
        return render_prompt(self.tokenizer, self.spec.prompt_format, request)

    def generate(self, requests: list[Request]) -> list[Completion]:
        start = time.perf_counter()
        results: list[Completion | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: _sampling_key(requests[i]))
        for _, group in groupby(order, key=lambda i: _sampling_key(requests[i])):
            indices = list(group)
            for at in range(0, len(indices), self.batch_size):
                chunk = indices[at : at + self.batch_size]
                outputs = self._generate_chunk([requests[i] for i in chunk])
                for i, completion in zip(chunk, outputs, strict=True):
                    results[i] = completion
        completions = [c for c in results if c is not None]
        self.stats.add(completions, time.perf_counter() - start)
        return completions

    def _generate_chunk(self, requests: list[Request]) -> list[Completion]:
        torch = self._torch
        first = requests[0]
        prompts = [self.render(r) for r in requests]
        # The chat template already holds the special tokens; do not add a second BOS.
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.device)
        kwargs: dict[str, object] = {
            "max_new_tokens": first.max_tokens,
            "do_sample": False,
            "pad_token_id": self.tokenizer.pad_token_id,
            "temperature": None, "top_p": None, "top_k": None,
        }
        if first.temperature > 0:
            # Sampling with each request's own seed: greedy decoding over logits from which
            # the sampler has already picked the row's token (see PerRequestSampler).
            from transformers import LogitsProcessorList

            seeds = [r.seed if r.seed is not None else self.seed for r in requests]
            kwargs["logits_processor"] = LogitsProcessorList([PerRequestSampler(
                torch, seeds, first.temperature, first.top_p, self.device)])
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        eos_ids = _eos_ids(self.model, self.tokenizer) | set(first.stop_token_ids)
        if first.stop_token_ids:  # a request's own stop tokens end it as EOS would
            kwargs["eos_token_id"] = sorted(eos_ids)
        with torch.inference_mode():
            out = self.model.generate(**batch, **kwargs)
        prompt_len = batch["input_ids"].shape[1]
        completions = []
        for row, request in enumerate(requests):
            new_ids = out[row, prompt_len:].tolist()
            ended_by_eos = False
            for pos, tok in enumerate(new_ids):
                if tok in eos_ids:
                    new_ids, ended_by_eos = new_ids[:pos], True
                    break
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
            text, ended_by_stop = _cut_at_stop(text, request.stop)
            hit_limit = len(new_ids) >= request.max_tokens and not (ended_by_eos or ended_by_stop)
            completions.append(
                Completion(
                    text=text,
                    finish_reason="length" if hit_limit else "stop",
                    prompt_tokens=int(batch["attention_mask"][row].sum()),
                    completion_tokens=len(new_ids),
                )
            )
        return completions

    def close(self, wait: bool = True) -> None:
        self.model = None


class PerRequestSampler:
    """Samples each row of a batch with its own torch.Generator, seeded by its request, after
    temperature and nucleus (top-p) filtering, and returns logits that leave only that token
    (greedy decoding then takes it). A request's tokens thus follow from its own seed, wherever
    it sits in the batch and whatever its neighbours are, as with vLLM's per-request seeds."""

    def __init__(self, torch, seeds: list[int], temperature: float, top_p: float,
                 device: str) -> None:
        self.torch = torch
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        torch = self.torch
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest set of top tokens whose mass reaches top_p (at least one).
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        picked = torch.full_like(scores, float("-inf"))
        for row, generator in enumerate(self.generators):
            token = torch.multinomial(probs[row], 1, generator=generator)
            picked[row, token] = 0.0
        return picked


def _sampling_key(r: Request) -> tuple:
    return (r.max_tokens, r.temperature, r.top_p, r.stop, r.stop_token_ids)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        found.add(tokenizer.pad_token_id)
    return found


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
