"""The model registry: names, paths, formats, and the messages for unknown or missing models."""

import json

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import load_registry, spec_from_checkpoint_dir

REQUIRED = {"smollm2-135m", "llama-7b", "llama-2-7b-chat", "qwen2.5-7b-instruct"}


def test_project_registry_has_the_required_models(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGEN_MODEL_DIR", str(tmp_path))
    registry = load_registry()
    assert set(registry.models) >= REQUIRED
    assert registry.default == "smollm2-135m"
    smol = registry.resolve(None)
    assert smol.is_packaged and smol.prompt_format == "chat"
    assert smol.path == tmp_path / "smollm2-135m"  # relative paths live under $SIGEN_MODEL_DIR
    assert registry.resolve("llama-7b").prompt_format == "completion"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(SigenError) as err:
        load_registry().resolve("gpt-5")
    assert "unknown model 'gpt-5'" in str(err.value)
    assert "llama-7b" in str(err.value) and "smollm2-135m" in str(err.value)


def test_checkpoint_directory_as_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert spec_from_checkpoint_dir(tmp_path).prompt_format == "completion"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{x}}"}))
    spec = load_registry().resolve(str(tmp_path))
    assert spec.prompt_format == "chat" and spec.path == tmp_path.resolve()


def test_custom_registry_file(tmp_path):
    registry_file = tmp_path / "models.yaml"
    registry_file.write_text(
        "models:\n  mine:\n    path: /opt/ckpt/mine\n    prompt_format: completion\n"
    )
    registry = load_registry(registry_file)
    assert registry.default == "mine" and str(registry.resolve("mine").path) == "/opt/ckpt/mine"
    registry_file.write_text("models:\n  bad:\n    path: x\n    prompt_format: instruct\n")
    with pytest.raises(SigenError, match="prompt_format must be one of"):
        load_registry(registry_file)
    with pytest.raises(SigenError, match="does not exist"):
        load_registry(tmp_path / "nope.yaml")
