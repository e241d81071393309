"""--method magpie: the pre-query cut from chat templates of several model families, the method's
logic on completions recorded from the packaged model (a scripted engine answers with them), the
refusals, and end to end on the packaged model in-process and through a shared `vllm serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct_local.engines.base import Completion, Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.export import export
from selfinstruct_local.methods.magpie import load_template, request_problem
from selfinstruct_local.runstore import INSTANCES, INSTRUCTIONS, MANIFEST, PENDING, REJECTED
from selfinstruct_local.tokenizer import local_tokenizer
from tests.conftest import sigen as sigen_process
from tests.scripted import Killed, ScriptedEngine, scripted_loop
from tests.test_cli_errors import assert_clean_error
from tests.test_cli_errors import sigen as sigen  # noqa: PLC0414 - the fixture, used by name
from tests.test_export import load_dataset as load_dataset  # noqa: PLC0414 - the fixture

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = FIXTURES / "chat_templates"

def recorded(lang: str) -> dict:
    return json.loads((FIXTURES / "completions" / f"magpie_{lang}.json").read_text(
        encoding="utf-8"))


RECORDED, RECORDED_ZH = recorded("en"), recorded("zh")

# Each family's pre-query (no system prompt) and end-of-turn text, written out by hand from its
# template: the text the model continues is exactly what precedes a user's message.
FAMILIES = {
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
               "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
    "qwen2.5": ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                "assistant.<|im_end|>\n<|im_start|>user\n", "<|im_end|>"),
    "smollm2": ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                "Hugging Face<|im_end|>\n<|im_start|>user\n", "<|im_end|>"),
    "gemma": ("<bos><start_of_turn>user\n", "<end_of_turn>"),
    "glm4": ("[gMASK]<sop><|user|>\n", ""),
}
TURN = [{"role": "user", "content": "Name three rivers."},
        {"role": "assistant", "content": "The Nile, the Amazon and the Yangtze."}]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_pre_query_ends_where_the_users_message_begins(family):
    template = load_template(TEMPLATES / family)
    expected, end = FAMILIES[family]
    assert template.pre_query(None, ()) == expected
    assert template.end_of_turn == end
    tokenizer = template.tokenizer

    def rendered(messages, generation_prompt=False):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)

    # The same conversation with a real message: the pre-query, then the message.
    assert rendered([{"role": "user", "content": "Hello there"}]).startswith(
        expected + "Hello there" + end)
    # After an answer, the next user turn starts where the pre-query of the longer one ends.
    later = template.pre_query(None, TURN)
    assert rendered([*TURN, {"role": "user", "content": "And two lakes?"}]).startswith(
        later + "And two lakes?")
    assert later.startswith(rendered(TURN)[:len(expected)])
    # The answer's prompt is the whole template up to the assistant's turn.
    assert template.prompt(None, TURN[:1]) == rendered(TURN[:1], generation_prompt=True)
    # Every special token of the tokenizer stops a request; the template's own ones among them.
    specials = set(template.special)
    assert {t for t in tokenizer.all_special_tokens} <= specials
    assert all(tokenizer.convert_tokens_to_ids(t) in template.special_ids for t in specials)
    if family != "gemma":  # Gemma's template has no system role
        with_system = template.pre_query("You answer in verse.", ())
        assert "You answer in verse." in with_system
        assert rendered([{"role": "system", "content": "You answer in verse."},
                         {"role": "user", "content": "Hi"}]).startswith(with_system + "Hi")


def test_a_template_without_a_system_role_says_so():
    template = load_template(TEMPLATES / "gemma")
    with pytest.raises(SigenError, match="fails on a conversation with a system prompt: "
                       "System role not supported. Leave out --system"):
        template.pre_query("Reply in Chinese.", ())


def test_what_small_models_write_in_the_users_place():
    """Recorded completions of the packaged model: the template written back (its Chinese system
    prompt) and answers are recognized; its real requests are not."""
    template = load_template(TEMPLATES / "smollm2")
    prompt = template.pre_query(None, ())
    chinese = template.pre_query(RECORDED_ZH["system"], ())
    for item in RECORDED_ZH["queries"]:
        verdict = request_problem(template, item["text"], chinese, "zh")
        assert verdict == (item.get("expect") if item.get("expect") == "template_echo" else None)
    for text in RECORDED["answers_as_requests"]:
        assert request_problem(template, text, prompt, "en") == "answer_not_request", text
    for item in RECORDED["queries"]:
        if item.get("expect") is None:
            assert request_problem(template, item["text"], prompt, "en") is None, item["text"]
    assert request_problem(template, "User: What is the capital of France?", prompt, "en") == \
        "template_echo"
    # A request that asks something may open as an answer would.
    assert request_problem(template, "Sure, and could you also explain the second step?",
                           prompt, "en") is None
    answer = "当然！以下是三个建议：多喝水，早睡，每天散步。"
    assert request_problem(template, answer, prompt, "zh") == "answer_not_request"
    assert request_problem(template, "请用简单的话解释什么是光合作用。", prompt, "zh") is None


def test_a_refusal_is_no_answer():
    """Answers the packaged model gave to its own requests (recorded): the refusals go."""
    from selfinstruct_local.methods.magpie import answer_problem

    refusal = ("I'm sorry for the misunderstanding, but as a chatbot designed to assist with "
               "recipes, I don't have the capability to provide recipes.")
    assert answer_problem(refusal, "en") == "refusal"
    assert answer_problem("抱歉，我无法回答这个问题。", "zh") == "refusal"
    assert answer_problem("...!", "en") == "trivial_answer"
    assert answer_problem("Renewable energy sources offer numerous benefits, including reducing "
                          "greenhouse gas emissions.", "en") is None
    assert answer_problem("I completely understand your concerns. It's completely normal to "
                          "have doubts.", "en") is None


def test_an_answer_that_writes_its_request_back_is_no_answer():
    """Recorded from the packaged model in a Chinese 2-turn run: each answer was its request,
    word for word. An answer that restates the request before answering is kept."""
    from selfinstruct_local.methods.magpie import echoes

    assert echoes("2. 你想让它们一起用的合理的方式？", "2. 你想让它们一起用的合理的方式？") == \
        "echoed_request"
    assert echoes("What is a prime number, exactly?", "What is a prime number?") == \
        "echoed_request"
    assert echoes("You asked how to bake bread. Mix flour, water, salt and yeast, knead, let it "
                  "rise, and bake it at 220 C for 30 minutes.", "How do I bake bread?") is None
    assert echoes("质数是只能被1和它本身整除的大于1的整数，例如2、3、5。", "什么是质数？") is None


# -- the method on recorded completions ----------------------------------------------------------

class MagpieEngine(ScriptedEngine):
    """Answers Magpie's requests with completions recorded from smollm2-135m: a first request
    (`queries`, in turn), a later turn's request (`follow_ups`) or an answer (`answers`), told
    apart by how the prompt ends. A conversation gets the follow-ups and answers recorded after
    its own first request, in order, then the `general_` ones in turn. Other requests (the
    judge) get the scripted engine's answers."""

    def __init__(self, recorded: dict = RECORDED, kill_after: int | None = None) -> None:
        super().__init__(fail=0.0, kill_after=kill_after)
        self.recorded = recorded
        self.served: dict[object, int] = {}

    def _next(self, key: object, items: list[dict]) -> dict:
        n = self.served.get(key, 0)
        self.served[key] = n + 1
        return items[n % len(items)]

    def answer(self, request: Request) -> Completion:
        if not request.raw:
            return super().answer(request)
        assert request.stop == ("<|im_end|>",) and 2 in request.stop_token_ids
        if request.prompt.endswith("<|im_start|>assistant\n"):
            kind = "answers"
        else:
            assert request.prompt.endswith("<|im_start|>user\n")
            kind = "follow_ups" if "<|im_start|>assistant\n" in request.prompt else "queries"
        recorded = self.recorded[kind]
        if isinstance(recorded, list):
            item = self._next(kind, recorded)
        else:  # by the conversation's first request
            first = request.prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
            own = recorded.get(first, [])
            if self.served.get(first + kind, 0) < len(own):
                item = self._next(first + kind, own)
            else:
                item = self._next(kind, self.recorded[f"general_{kind}"])
        return Completion(item["text"], item.get("finish_reason", "stop"), 100,
                          len(item["text"].split()))


def rows(root: Path, name: str) -> list[dict]:
    path = root / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] \
        if path.exists() else []


def test_a_run_of_single_requests(tmp_path, smollm2):
    """In Chinese, with the default Chinese system prompt: the requests the packaged model wrote
    in that run are screened as they were there (its template echo, its English requests)."""
    engine = MagpieEngine(RECORDED_ZH)
    loop = scripted_loop(tmp_path, engine, method="magpie", lang="zh", num_instructions=4)
    loop.run()
    finals, instances = rows(tmp_path, INSTRUCTIONS), rows(tmp_path, INSTANCES)
    assert len(finals) == 4 and len(instances) == 4
    expected = {q["text"]: q.get("expect") for q in RECORDED_ZH["queries"]}
    assert all(expected[r["instruction"]] is None for r in finals)
    assert all(r["input"] == "" and "conversation" not in r for r in instances)
    assert {r["system"] for r in finals} == {RECORDED_ZH["system"]}
    rejected = [r for r in rows(tmp_path, REJECTED) if "id" not in r]
    assert rejected and all(r["reason"] == expected[r["instruction"]] for r in rejected)
    assert "template_echo" in {r["reason"] for r in rejected}
    # No seed set: nothing in the pool before the first request, and none recorded.
    assert rows(tmp_path, PENDING)[0]["most_similar"] == []
    manifest = json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["config"]["seeds"] is None and manifest["counts"]["seed_tasks"] == 0
    assert manifest["config"]["turns"] == 1
    assert [s for s, *_ in loop.snapshot().stages] == ["query", "response"]
    # Every request is the model's own text: the pre-query, then the template with a request.
    pre_query = f"<|im_start|>system\n{RECORDED_ZH['system']}<|im_end|>\n<|im_start|>user\n"
    queries = [r for r in engine.sent if not r.prompt.endswith("assistant\n")]
    assert {r.prompt for r in queries} == {pre_query} and all(r.raw for r in engine.sent)
    assert {r.temperature for r in queries} == {0.7}  # the model's sampling defaults
    answers = [r for r in engine.sent if r.prompt.endswith("assistant\n")]
    assert {r.temperature for r in answers[:6]} == {0.0}  # greedy first
    for row in finals:
        assert any(r.prompt == f"{pre_query}{row['instruction']}<|im_end|>\n"
                   "<|im_start|>assistant\n" for r in answers)


def test_a_three_turn_conversation_and_its_exports(tmp_path, smollm2, load_dataset):
    engine = MagpieEngine()
    loop = scripted_loop(tmp_path, engine, method="magpie", num_instructions=3, turns=3)
    loop.run()
    assert [s for s, *_ in loop.snapshot().stages] == [
        "query", "response", "query2", "response2", "query3", "response3"]
    finals, instances = rows(tmp_path, INSTRUCTIONS), rows(tmp_path, INSTANCES)
    assert len(finals) == 3 and all(r["turns"] == 3 for r in finals)
    by_id = {r["id"]: r for r in finals}
    for row in instances:
        conversation = row["conversation"]
        assert [m["role"] for m in conversation] == ["user", "assistant"] * 3
        assert conversation[0]["content"] == row["instruction"] == \
            by_id[row["instruction_id"]]["instruction"]
        assert conversation[1]["content"] == row["output"]
        # Its second request: the one recorded after its first that the run kept there (else,
        # after a repeated one, the next of the other runs' follow-ups).
        kept = [f["text"] for f in RECORDED["follow_ups"][row["instruction"]] if "expect" not in f]
        general = [f["text"] for f in RECORDED["general_follow_ups"]]
        assert conversation[2]["content"] in (kept or general)
        assert conversation[4]["content"] in general
    # A later turn that repeats the conversation is drawn again, and logged with its turn: the
    # ones the recorded run rejected so are rejected here too.
    expected = {f["text"] for fs in RECORDED["follow_ups"].values() for f in fs
                if f.get("expect") == "repeated_turn"}
    repeated = [r for r in rows(tmp_path, REJECTED) if r["reason"] == "repeated_turn"]
    assert expected <= {r["request"] for r in repeated}
    assert all(r["stage"] == "instance" and r["turn"] in (2, 3) for r in repeated)
    # The next user turn is drawn from the template after the answer.
    follow_ups = [r for r in engine.sent if "<|im_start|>assistant\n" in r.prompt
                  and r.prompt.endswith("<|im_start|>user\n")]
    first = instances[0]["conversation"]
    assert any(r.prompt == f"{FAMILIES['smollm2'][0]}{first[0]['content']}<|im_end|>\n"
               f"<|im_start|>assistant\n{first[1]['content']}<|im_end|>\n<|im_start|>user\n"
               for r in follow_ups)

    sharegpt = load_dataset(export(tmp_path, "sharegpt").path)
    assert [[m["from"] for m in r["conversations"]] for r in sharegpt] == \
        [["human", "gpt"] * 3] * 3
    assert [r["conversations"][4]["value"] for r in sharegpt] == \
        [r["conversation"][4]["content"] for r in instances]
    messages = load_dataset(export(tmp_path, "messages", system="Be brief.").path)
    assert [[m["role"] for m in r["messages"]] for r in messages] == \
        [["system", *["user", "assistant"] * 3]] * 3
    alpaca = load_dataset(export(tmp_path, "alpaca").path)  # the first turn
    assert alpaca == [{"instruction": r["instruction"], "input": "", "output": r["output"]}
                      for r in instances]


@pytest.mark.parametrize("kill_after", [1, 3, 6])
def test_a_kill_mid_conversation_then_resume(tmp_path, smollm2, kill_after):
    """Killed (as kill -9: what was not committed is lost) while conversations are half
    written; the resume starts them again from their first request and writes each once."""
    first = scripted_loop(tmp_path, MagpieEngine(kill_after=kill_after), method="magpie",
                          num_instructions=5, turns=2, batch_size=2)
    with pytest.raises(Killed):
        first.run()
    before = rows(tmp_path, INSTRUCTIONS)
    scripted_loop(tmp_path, MagpieEngine(), method="magpie", num_instructions=5,
                  batch_size=2).run()  # --turns left out: the run's own
    finals, instances = rows(tmp_path, INSTRUCTIONS), rows(tmp_path, INSTANCES)
    assert len(finals) == 5 and all(row in finals for row in before)
    assert sorted(r["instruction_id"] for r in instances) == sorted(r["id"] for r in finals)
    assert all(len(r["conversation"]) == 4 for r in instances)


# -- refusals ------------------------------------------------------------------------------------

def test_a_base_model_is_refused(tmp_path, sigen):
    out = tmp_path / "r"
    result = sigen("run", "--method", "magpie", "--model", "llama-7b", "-o", str(out))
    assert_clean_error(result, "--method magpie needs an aligned chat model",
                       "llama-7b is a base model (prompt_format: completion)")
    assert not out.exists()


def test_a_model_only_a_server_has_is_refused_with_why(tmp_path, sigen):
    """Without the tokenizer here, only chat completions could reach the model: refused before
    any request (nothing listens on the port)."""
    out = tmp_path / "r"
    result = sigen("run", "--method", "magpie", "--engine", "openai", "--base-url",
                   "http://127.0.0.1:9/v1", "--model", "someone/served-only", "-o", str(out))
    assert_clean_error(result, "needs the model's tokenizer on this machine",
                       "/v1/chat/completions, which always closes the user's turn")
    assert not out.exists()


def test_options_that_do_not_fit(tmp_path, sigen, smollm2):
    out = tmp_path / "r"
    assert_clean_error(sigen("run", "--method", "magpie", "--seeds", str(
        FIXTURES / "self_instruct_format_sample.jsonl"), "-o", str(out)),
        "--method magpie needs no seed tasks")
    assert_clean_error(sigen("run", "--turns", "2", "-o", str(out)),
                       "--turns is an option of --method magpie")
    empty = tmp_path / "systems.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert_clean_error(sigen("run", "--method", "magpie", "--system-file", str(empty),
                             "-o", str(out)), f"--system-file {empty} holds no system prompt")
    assert_clean_error(sigen("run", "--method", "magpie", "--system", "x", "--system-file",
                             str(empty), "-o", str(out)), "pass one")
    assert not out.exists()


def test_system_prompts_from_a_file_one_per_request(tmp_path, smollm2):
    systems = tmp_path / "systems.txt"
    systems.write_text("You are a chemist.\n\nYou are a gardener.\n", encoding="utf-8")
    engine = MagpieEngine()
    scripted_loop(tmp_path / "run", engine, method="magpie", num_instructions=6,
                  system_file=systems).run()
    drawn = {r.get("system") for r in rows(tmp_path / "run", INSTRUCTIONS)}
    assert drawn == {"You are a chemist.", "You are a gardener."}
    for row in rows(tmp_path / "run", PENDING):
        assert f"<|im_start|>system\n{row['system']}<|im_end|>" in next(
            r.prompt for r in engine.sent if r.prompt.endswith(
                f"{row['instruction']}<|im_end|>\n<|im_start|>assistant\n"))


def test_no_system_prompt_in_chinese_when_told(tmp_path, smollm2):
    """--system '': the template's own default, in any language."""
    engine = MagpieEngine(RECORDED_ZH)
    loop = scripted_loop(tmp_path, engine, method="magpie", lang="zh", system="",
                         num_instructions=1, max_rounds=1, batch_size=1)
    loop.run()
    assert engine.sent[0].prompt == FAMILIES["smollm2"][0]


# -- end to end on the packaged model ------------------------------------------------------------

def check_run(out: Path, n: int, turns: int) -> list[dict]:
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["status"] == "finished"
    assert manifest["config"]["seeds"] is None and manifest["config"]["method"] == "magpie"
    finals, instances = rows(out, INSTRUCTIONS), rows(out, INSTANCES)
    assert len(finals) == n and len(instances) == n
    for row in instances:
        messages = row.get("conversation") or [{"role": "user", "content": row["instruction"]},
                                                {"role": "assistant", "content": row["output"]}]
        assert [m["role"] for m in messages] == ["user", "assistant"] * turns
        assert all(m["content"].strip() and "<|im_" not in m["content"] for m in messages)
    return instances


# The engine tests cap the answers (the default, 1,024 tokens, is most of their time on a CPU).
ANSWER_CAP = 128


@pytest.mark.engine
def test_in_process_on_the_packaged_model(tmp_path, smollm2, load_dataset):
    out = tmp_path / "run"
    result = sigen_process("run", "--method", "magpie", "-n", "2", "--turns", "2", "-o",
                           str(out), "--seed", "3", "--max-answer-tokens", str(ANSWER_CAP))
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(out, 2, turns=2)
    exported = sigen_process("export", str(out), "-f", "sharegpt")
    assert exported.returncode == 0, exported.stderr[-2000:]
    data = load_dataset(out / "export.sharegpt.json")
    assert [[m["from"] for m in r["conversations"]] for r in data] == \
        [["human", "gpt", "human", "gpt"]] * 2


@pytest.mark.engine
def test_through_the_shared_vllm_serve(tmp_path, smollm2, vllm_server):
    out = tmp_path / "run"
    result = sigen_process("run", "--method", "magpie", "-n", "2", "--engine", "openai",
                           "--base-url", vllm_server.base_url, "-o", str(out), "--seed", "5",
                           "--max-answer-tokens", str(ANSWER_CAP))
    assert result.returncode == 0, result.stderr[-3000:]
    instances = check_run(out, 2, turns=1)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["engine"]["rendering"] == "local tokenizer"
    assert manifest["config"]["max_answer_tokens"] == ANSWER_CAP
    tokenizer = local_tokenizer(smollm2.path)
    assert all(len(tokenizer.encode(r["output"])) <= ANSWER_CAP for r in instances)


@pytest.mark.engine
def test_the_transformers_engine_stops_at_the_templates_tokens(smollm2):
    """A raw request through transformers: the text after the pre-query, stopped at a special
    token (none of which is left in it)."""
    from selfinstruct_local.engines.base import EngineOptions
    from selfinstruct_local.engines.transformers import TransformersEngine

    template = load_template(smollm2.path)
    engine = TransformersEngine(smollm2, EngineOptions(seed=0))
    try:
        [completion] = engine.generate([Request(
            prompt=template.pre_query(None, ()), raw=True, max_tokens=96, temperature=0.7,
            top_p=0.9, stop=template.stop, stop_token_ids=template.special_ids, seed=11)])
    finally:
        engine.close()
    assert completion.finish_reason == "stop" and completion.completion_tokens < 96
    assert completion.text.strip() and not any(s in completion.text for s in template.special)
