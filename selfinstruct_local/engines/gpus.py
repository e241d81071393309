"""How many GPUs a run uses and how they split into replicas (data parallelism).

`--gpus N --tensor-parallel T` makes N/T replicas of T GPUs each. A model that fits one GPU runs
fastest as one replica per GPU (no cross-GPU traffic per token), so T defaults to the model's
`tensor_parallel` in models.yaml, else 1.
"""

from __future__ import annotations

from selfinstruct_local.errors import SigenError


def count_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(requested: int | None, available: int | None = None) -> int:
    """The number of GPUs to use: 1 when one is visible and none was asked for, else 0 (CPU)."""
    available = count_gpus() if available is None else available
    if requested is None:
        return 1 if available else 0
    if requested < 0:
        raise SigenError(f"--gpus must be 0 or more, not {requested}")
    if requested > available:
        raise SigenError(
            f"--gpus {requested} asked for more GPUs than are visible ({available}). "
            "Check CUDA_VISIBLE_DEVICES and nvidia-smi, or pass a smaller --gpus (0 runs on CPU)."
        )
    return requested


def plan_parallelism(gpus: int, tensor_parallel: int | None, model_default: int | None
                     ) -> tuple[int, int]:
    """(tensor_parallel, replicas) for `gpus` GPUs; a clear error when they do not divide."""
    if gpus == 0:
        if tensor_parallel not in (None, 1):
            raise SigenError("--tensor-parallel needs GPUs; on the CPU (--gpus 0) leave it unset")
        return 1, 1
    tp = tensor_parallel or model_default or 1
    if tp < 1:
        raise SigenError(f"--tensor-parallel must be 1 or more, not {tp}")
    if tp > gpus:
        if tensor_parallel is None:  # the model's own default: use what there is
            return gpus, 1
        raise SigenError(f"--tensor-parallel {tp} needs at least {tp} GPUs; --gpus is {gpus}")
    if gpus % tp:
        raise SigenError(
            f"--gpus {gpus} does not divide into replicas of --tensor-parallel {tp} GPUs. "
            f"Pass a --gpus that is a multiple of {tp} (e.g. {gpus - gpus % tp}).")
    return tp, gpus // tp
