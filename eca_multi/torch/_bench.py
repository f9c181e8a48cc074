"""The torch benchmark run by :mod:`eca_multi.benchmark` (``eca-multi bench --backends torch``).

Modes: ``eager``, ``compile`` (``torch.compile(fullgraph=True, dynamic=False)``, the floor
compiled the same way), ``channels_last`` (eager, 4-D input in ``torch.channels_last`` memory
format, floor on the same tensor) and ``timm`` (timm's ``EcaModule`` against the same floor, 4-D
float32 only: it rejects bfloat16 input outside autocast). The model rows compare ECA-ResNet50 with
the same ResNet-50 built without ECA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from ..benchmark import DTYPES, LAYER_SHAPES, QUICK_SHAPES, inference_reps, paired, shape_id
from . import ECA

__all__ = ["run"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _floor(x: torch.Tensor) -> torch.Tensor:
    return x * x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)


def _fwd_bwd(fn, x: torch.Tensor, params: tuple, g: torch.Tensor):
    def step():
        return torch.autograd.grad(fn(x), (x, *params), g)

    return step


def _mode_rows(shape, dtype: str, mode: str, reps: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=_DTYPES[dtype])
    if mode == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if mode == "timm":
        from timm.layers.eca import EcaModule

        layer: nn.Module = EcaModule(shape[1])
    else:
        layer = ECA(channels=shape[1])
    eca_fn: Callable[[torch.Tensor], torch.Tensor] = layer
    floor_fn: Callable[[torch.Tensor], torch.Tensor] = _floor
    if mode == "compile":
        torch.compiler.reset()  # fresh guards per shape: never hit the recompile limit
        eca_fn = torch.compile(lambda t: layer(t), fullgraph=True, dynamic=False)
        floor_fn = torch.compile(_floor, fullgraph=True, dynamic=False)
    base = {"framework": "torch", "mode": mode, "shape": shape_id(shape), "dtype": dtype}
    with torch.no_grad():
        fwd = paired(lambda: floor_fn(x), lambda: eca_fn(x), reps=reps)
    xg = x.detach().requires_grad_(True)
    g = torch.randn_like(xg)
    w = cast(nn.Conv1d, layer.conv).weight  # timm's EcaModule and ECA: a (1, 1, k) Conv1d
    both = paired(_fwd_bwd(floor_fn, xg, (), g), _fwd_bwd(eca_fn, xg, (w,), g), reps=reps)
    return [{**base, "pass": "fwd", **fwd}, {**base, "pass": "fwd+bwd", **both}]


def _layer_rows(shape, dtype: str, modes: tuple[str, ...], reps: int) -> list[dict]:
    rows = []
    for mode in modes:
        if mode == "channels_last" and len(shape) != 4:
            continue
        if mode == "timm" and (len(shape) != 4 or dtype != "float32"):
            continue
        rows += _mode_rows(shape, dtype, mode, reps)
    return rows


def _plain_twin(model: nn.Module) -> tuple[nn.Module, str]:
    """The same ResNet with every ECA replaced by nn.Identity (until the builders take
    ``attention=None``); returns the model and how it was made."""
    for name, module in list(model.named_modules()):
        if isinstance(module, ECA):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
    return model, "plain twin = the same builder with each ECA module replaced by nn.Identity"


def _models(name: str, size: int) -> tuple[nn.Module, nn.Module, str]:
    import inspect

    from . import models

    if "attention" in inspect.signature(models.create_model).parameters:
        torch.manual_seed(0)
        eca = models.create_model(name)
        torch.manual_seed(0)
        plain = models.create_model(name, attention=None)
        note = "plain twin = create_model(name, attention=None)"
    else:
        torch.manual_seed(0)
        eca = models.create_model(name)
        torch.manual_seed(0)
        plain, note = _plain_twin(models.create_model(name))
    return eca, plain, note


def _model_rows(quick: bool, reps: int) -> list[dict]:
    name, batch, size = ("eca_resnet18", 2, 32) if quick else ("eca_resnet50", 8, 224)
    eca, plain, note = _models(name, size)
    shape = f"ResNet-{name[10:]} {batch}x3x{size}x{size}"
    x = torch.randn(batch, 3, size, size)
    rows = []
    for m in (eca, plain):
        m.eval()
    with torch.no_grad():
        r = paired(
            lambda: plain(x), lambda: eca(x), reps=inference_reps(reps), block_s=0.0, warmup=1
        )
    base = {"framework": "torch", "mode": "model", "shape": shape, "dtype": "float32"}
    rows.append({**base, "pass": "inference", "note": note, **r})
    labels = torch.randint(0, 1000, (batch,))
    steps = []
    for m in (plain, eca):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(m(x), labels).backward()
            opt.step()

        steps.append(step)
    r = paired(*steps, reps=max(3, reps // 2), block_s=0.0, warmup=1)
    rows.append({**base, "pass": "train step", "note": note, **r})
    return rows


def run(opts: dict) -> list[dict]:
    """Layer rows for every shape x dtype x mode x pass, then the model rows."""
    quick = bool(opts.get("quick"))
    reps = opts.get("reps") or (3 if quick else 7)
    shapes = QUICK_SHAPES if quick else LAYER_SHAPES
    modes = ("eager", "compile", "channels_last", "timm")
    rows = []
    if opts.get("layers", True):
        for dtype in DTYPES[:1] if quick else DTYPES:
            for i, shape in enumerate(shapes):
                # quick (smoke) runs compile one shape only: each compile costs seconds
                use = modes if not quick or i == 0 else tuple(m for m in modes if m != "compile")
                rows += _layer_rows(shape, dtype, use, reps)
    if opts.get("models", True):
        rows += _model_rows(quick, reps)
    return rows
