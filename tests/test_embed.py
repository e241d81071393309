"""Embedders: the checkpoint's pooling read from its sentence-transformers files; transformers
pooling on a tiny checkpoint built here; the /v1/embeddings client against a server on
127.0.0.1 that answers well or badly; and the packaged SmolLM2 pooled by transformers and by
vLLM's pooling runner (engine tests: one load each, a few texts)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from selfinstruct_local import embed
from selfinstruct_local.embed import load_embedder, normalized
from selfinstruct_local.embed.openai import OpenAIEmbedder
from selfinstruct_local.embed.pooling import read_pooling
from selfinstruct_local.errors import SigenError
from tests.fake_openai import HTML, FakeOpenAIServer, Reply


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def st_checkpoint(root: Path, pooling: dict, transformer_path: str = "", extra=()) -> Path:
    """The sentence-transformers files of a checkpoint (the weights are not needed to read
    them)."""
    modules = [{"idx": 0, "name": "0", "path": transformer_path,
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}, *extra]
    write_json(root / "modules.json", modules)
    write_json(root / "1_Pooling" / "config.json", pooling)
    write_json(root / transformer_path / "config.json", {"hidden_size": 48})
    return root


def test_pooling_of_a_plain_checkpoint_is_the_mean(tmp_path):
    write_json(tmp_path / "config.json", {"hidden_size": 576})
    pooling = read_pooling(tmp_path)
    assert (pooling.mode, pooling.dim, pooling.prefix, pooling.model_dir) == \
        ("mean", 576, "", tmp_path)


def test_pooling_from_sentence_transformers_files(tmp_path):
    root = st_checkpoint(tmp_path, {"word_embedding_dimension": 48, "pooling_mode_cls_token": True,
                                    "pooling_mode_mean_tokens": False}, transformer_path="0_T")
    write_json(root / "0_T" / "sentence_bert_config.json", {"max_seq_length": 256})
    write_json(root / "config_sentence_transformers.json",
               {"prompts": {"query": "query: ", "passage": "passage: "},
                "default_prompt_name": "query"})
    pooling = read_pooling(root)
    assert (pooling.mode, pooling.max_tokens, pooling.prefix, pooling.dim) == \
        ("cls", 256, "query: ", 48)
    assert pooling.model_dir == root / "0_T"
    assert read_pooling(st_checkpoint(tmp_path / "b", {"pooling_mode": "lasttoken"})).mode == "last"


@pytest.mark.parametrize(("pooling", "extra", "message"), [
    ({"pooling_mode_max_tokens": True}, (), "pooling_mode_max_tokens is not one that sigen"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, (), "one of them"),
    ({"pooling_mode_mean_tokens": True},
     [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}],
     "module Dense is not one that sigen computes"),
])
def test_pooling_sigen_cannot_compute_is_refused(tmp_path, pooling, extra, message):
    with pytest.raises(SigenError, match=message):
        read_pooling(st_checkpoint(tmp_path, pooling, extra=extra))


def test_a_broken_pooling_file_is_named(tmp_path):
    root = st_checkpoint(tmp_path, {})
    (root / "1_Pooling" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SigenError, match=r"1_Pooling/config.json: not valid JSON"):
        read_pooling(root)


def test_normalized_rows_and_zero_vectors():
    out = normalized(np.array([[3.0, 4.0], [0.0, 2.0]]), "m")
    assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8], [0, 1]])
    for bad in ([[0.0, 0.0]], [[np.nan, 1.0]]):
        with pytest.raises(SigenError, match="zero or not finite"):
            normalized(np.array(bad), "m")


def test_load_embedder_refuses_an_unknown_backend_or_model():
    with pytest.raises(SigenError, match="unknown embedding backend 'onnx'"):
        load_embedder("smollm2-135m", backend="onnx")
    with pytest.raises(SigenError, match="unknown model 'no-such-embedder'"):
        load_embedder("no-such-embedder")


# -- transformers pooling on a tiny checkpoint --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A 2-layer LLaMA with random weights and a word-level tokenizer, saved as a checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    words = ["<pad>", "<unk>", "write", "a", "poem", "about", "the", "sea", "ocean", "convert",
             "miles", "to", "km"]
    vocabulary = {word: i for i, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(root)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         pad_token_id=0)
    LlamaModel(config).save_pretrained(root)
    return root


TEXTS = ["write a poem about the sea", "convert miles to km", "a poem", "write a poem about the "
         "ocean"]


def expected(root: Path, mode: str) -> np.ndarray:
    """Each text alone (no padding), pooled by hand."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(root), AutoModel.from_pretrained(root)
    rows = []
    for text in TEXTS:
        with torch.inference_mode():
            states = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        rows.append({"mean": states.mean(0), "cls": states[0], "last": states[-1]}[mode].numpy())
    rows = np.array(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["mean", "cls", "last"])
def test_transformers_pools_each_text_as_alone_whatever_its_batch(tiny_checkpoint, tmp_path, mode):
    from selfinstruct_local.embed.transformers import TransformersEmbedder
    from selfinstruct_local.models import ModelSpec

    root = tiny_checkpoint
    if mode != "mean":  # sentence-transformers files beside the weights name the mode
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models."
                    "Transformer"}, {"idx": 1, "name": "1", "path": "1_Pooling",
                                     "type": "sentence_transformers.models.Pooling"}]
        root = tmp_path / "st"
        root.mkdir()
        for item in tiny_checkpoint.iterdir():
            (root / item.name).symlink_to(item)
        write_json(root / "modules.json", modules)
        write_json(root / "1_Pooling" / "config.json",
                   {"pooling_mode": {"cls": "cls", "last": "lasttoken"}[mode]})
    embedder = TransformersEmbedder(ModelSpec(name="tiny", path=root, dtype="float32"),
                                    batch_size=3)
    vectors = embedder.embed(TEXTS)  # batches of 3 sorted by length: padding in each
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32 and embedder.dim == 16
    assert np.allclose(vectors, expected(tiny_checkpoint, mode), atol=1e-5)
    assert embedder.embed([]).shape == (0, 16)


# -- a server's /v1/embeddings ------------------------------------------------------------------

def fake_vector(text: str, dim: int = 8) -> list[float]:
    rng = random.Random(text)
    return [rng.uniform(-1, 1) for _ in range(dim)]


def embeddings_reply(shuffle: bool = False, dim: int = 8):
    def answer(_headers: dict, body: dict) -> Reply:
        items = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim)}
                 for i, t in enumerate(body["input"])]
        if shuffle:
            items.reverse()
        return Reply({"object": "list", "data": items, "model": body["model"]})
    return answer


def test_server_vectors_in_order_batched_and_normalized():
    texts = [f"text {i}" for i in range(5)]
    with FakeOpenAIServer(embeddings=embeddings_reply(shuffle=True)) as server:
        embedder = load_embedder("bge-m3", base_url=server.url + "/")
        embedder.batch_size = 2
        vectors = embedder.embed(texts)
        embedder.close()
    assert [body["input"] for _, body in server.bodies] == [texts[:2], texts[2:4], texts[4:]]
    assert {body["model"] for _, body in server.bodies} == {"bge-m3"}
    want = np.array([fake_vector(t) for t in texts])
    assert np.allclose(vectors, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    assert embedder.dim == 8 and embedder.backend == "openai"


def test_many_texts_are_embedded_in_chunks_with_progress_lines(monkeypatch):
    """A long file's embedding reports how far it is (the server's vectors, through the real
    client): the same vectors, in order, as in one call."""
    monkeypatch.setattr(embed, "PROGRESS_CHUNK", 3)
    texts = [f"text {i}" for i in range(10)]
    lines: list[str] = []
    with FakeOpenAIServer(embeddings=embeddings_reply()) as server:
        embedder = load_embedder("bge-m3", base_url=server.url)
        vectors = embed.embed_with_progress(embedder, texts, lines.append, every=0)
        whole = embedder.embed(texts)
        embedder.close()
    assert np.array_equal(vectors, whole)
    assert [body["input"] for _, body in server.bodies][:4] == [texts[0:3], texts[3:6],
                                                                texts[6:9], texts[9:]]
    assert [line.split(" texts")[0] for line in lines] == [
        "  embedded 3 of 10", "  embedded 6 of 10", "  embedded 9 of 10"]
    assert all("/s, about " in line and " left)" in line for line in lines)


def test_server_outage_is_retried_then_answered():
    calls = {"n": 0}
    good = embeddings_reply()

    def flaky(headers: dict, body: dict) -> Reply:
        calls["n"] += 1
        return Reply({"error": {"message": "loading"}}, status=503) if calls["n"] < 3 \
            else good(headers, body)

    with FakeOpenAIServer(embeddings=flaky) as server:
        vectors = OpenAIEmbedder(server.url, "m").embed(["a", "b"])
    assert vectors.shape == (2, 8) and calls["n"] == 3


@pytest.mark.parametrize(("reply", "message"), [
    (HTML, "not JSON"),
    (Reply({"data": [{"index": 0, "embedding": [1.0]}]}), "not 2 items"),
    (Reply({"data": [{"index": 0, "embedding": [1.0, 2.0]},
                     {"index": 0, "embedding": [1.0, 2.0]}]}), "missing or repeated"),
    (Reply({"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]}),
     "vectors of sizes"),
    (Reply('{"data": [{"index": 0, "embedding": [NaN, 1]}, {"index": 1, "embedding": [1, 1]}]}'),
     "not a list of numbers"),
    (Reply({"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [1.0]}]}),
     "not a list of numbers"),
])
def test_a_reply_that_is_not_an_embedding_list_is_an_error_quoting_it(reply, message,
                                                                     monkeypatch):
    # The waits between tries are real backoff; shortened here, the tries are not.
    monkeypatch.setattr("selfinstruct_local.embed.openai.backoff_seconds", lambda *_a: 0.01)
    with FakeOpenAIServer(embeddings=reply) as server, \
            pytest.raises(SigenError, match=message) as error:
        OpenAIEmbedder(server.url, "m").embed(["a", "b"])
    assert "3 times in a row" in str(error.value) and server.hits["/v1/embeddings"] == 3


def test_refusals_say_what_to_fix_without_the_secrets():
    echo = Reply({"error": {"message": "bad key sk-secret-123 for hunter2"}}, status=401)
    with FakeOpenAIServer(embeddings=echo) as server:
        url = server.url.replace("://", "://admin:hunter2@")
        with pytest.raises(SigenError) as error:
            load_embedder("m", base_url=url, api_key="sk-secret-123").embed(["a"])
    text = str(error.value)
    assert "API key" in text and "sk-secret" not in text and "hunter2" not in text
    with FakeOpenAIServer() as server, pytest.raises(SigenError, match="--runner pooling"):
        OpenAIEmbedder(server.url, "m").embed(["a"])  # no /v1/embeddings there: 404


def test_no_server_is_an_error_within_the_timeout():
    with FakeOpenAIServer() as server:
        url = server.url  # a port that was free a moment ago, closed now
    started = time.monotonic()
    with pytest.raises(SigenError, match="did not answer for 1 s"):
        OpenAIEmbedder(url, "m", server_timeout=1).embed(["a"])
    assert time.monotonic() - started < 10
    with pytest.raises(SigenError, match="--embed-base-url 'ftp://x/v1' is not an http"):
        OpenAIEmbedder("ftp://x/v1", "m")


# -- the packaged model ---------------------------------------------------------------------------

SENTENCES = ["Write a short poem about the sea.", "Write a short poem about the ocean.",
             "Convert 5 kilometres to miles.", "List three uses of a paper clip."]


@pytest.fixture(scope="module")
def smollm2_vectors(smollm2):
    embedder = load_embedder("smollm2-135m")  # the chat model, mean-pooled
    try:
        return embedder.embed(SENTENCES), embedder.embed(SENTENCES[2:3])
    finally:
        embedder.close()


@pytest.mark.engine
def test_packaged_model_as_a_weak_embedder(smollm2_vectors):
    vectors, alone = smollm2_vectors
    assert vectors.shape == (4, 576) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert np.allclose(alone[0], vectors[2], atol=1e-5)  # the same alone as in a batch
    cos = vectors @ vectors.T
    assert cos[0, 1] > max(cos[0, 2], cos[0, 3], cos[1, 2], cos[1, 3])  # sea ~ ocean


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_vllm_pooling_runner_gives_the_same_vectors(smollm2_vectors):
    embedder = load_embedder("smollm2-135m", backend="vllm", log=lambda _m: None)
    try:
        vectors = embedder.embed(SENTENCES)
    finally:
        embedder.close()
    assert vectors.shape == (4, 576) and embedder.backend == "vllm"
    assert (np.sum(vectors * smollm2_vectors[0], axis=1) > 0.9999).all()
