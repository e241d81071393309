"""The generation methods, one module each, as a list of stages (see pipeline/stages.py).

Adding a method (Evol-Instruct, Magpie) is one new module with a `method(ctx)` function and a
line in `METHODS`.
"""

from __future__ import annotations

from selfinstruct_local.pipeline.stages import Context, Method


def load_method(ctx: Context) -> Method:
    from selfinstruct_local.methods import alpaca, grounded, self_instruct

    if ctx.sampler is not None:
        return grounded.method(ctx)
    return {"alpaca": alpaca.method, "self-instruct": self_instruct.method}[ctx.config.method](ctx)
