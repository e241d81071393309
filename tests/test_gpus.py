"""How --gpus and --tensor-parallel split into replicas, and the server command for them."""

from pathlib import Path

import pytest

from selfinstruct_local.engines.gpus import check_gpus, plan_parallelism
from selfinstruct_local.engines.server import server_command
from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import ModelSpec


def test_replicas_from_gpus_and_tensor_parallel():
    assert plan_parallelism(0, None, None) == (1, 1)  # CPU
    assert plan_parallelism(2, None, None) == (1, 2)  # a 7B model: a replica per GPU
    assert plan_parallelism(8, 2, None) == (2, 4)
    assert plan_parallelism(8, None, 4) == (4, 2)  # the model's own tensor_parallel
    assert plan_parallelism(8, 8, 4) == (8, 1)  # the flag wins
    assert plan_parallelism(2, None, 4) == (2, 1)  # the model's default, fewer GPUs here


@pytest.mark.parametrize(("gpus", "tp", "says"), [
    (6, 4, "--gpus 6 does not divide into replicas of --tensor-parallel 4"),
    (2, 4, "--tensor-parallel 4 needs at least 4 GPUs"),
    (0, 2, "--tensor-parallel needs GPUs"),
])
def test_parallelism_errors(gpus, tp, says):
    with pytest.raises(SigenError, match=says):
        plan_parallelism(gpus, tp, None)


def test_gpu_count_checked_against_what_is_visible():
    assert check_gpus(None, available=0) == 0 and check_gpus(None, available=4) == 1
    assert check_gpus(4, available=8) == 4
    with pytest.raises(SigenError, match="--gpus 3 asked for more GPUs than are visible .2."):
        check_gpus(3, available=2)


def test_server_command_for_data_parallel_replicas():
    spec = ModelSpec(name="llama-7b", path=Path("/m/llama-7b"), dtype="float16",
                     max_model_len=2048)
    command = server_command(spec, spec.path, port=8011, gpus=8, tensor_parallel=2, replicas=4,
                             seed=1)
    joined = " ".join(command)
    assert "-m vllm.entrypoints.openai.api_server --model /m/llama-7b" in joined
    assert "--served-model-name llama-7b --host 127.0.0.1 --port 8011" in joined
    assert "--tensor-parallel-size 2 --data-parallel-size 4" in joined
    assert "--dtype float16" in joined and "--enforce-eager" not in joined
    cpu = " ".join(server_command(spec, spec.path, 8011, gpus=0, tensor_parallel=1, replicas=1,
                                  seed=1))
    assert "--data-parallel-size" not in cpu and "--no-enable-chunked-prefill" in cpu
