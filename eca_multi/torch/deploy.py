"""Export and distributed training for the torch ECA layer and models.

Export paths (each exports at one batch / spatial size and runs the reloaded artifact at another):

* ``torch.export`` with dynamic batch, height and width, saved and loaded as a ``.pt2`` file;
* TorchScript ``torch.jit.trace`` (saved and loaded with ``torch.jit.save`` / ``load``);
* TorchScript ``torch.jit.script``: not supported (the layer keeps its validated config as a
  Python dataclass and checks inputs in Python; TorchScript is deprecated in torch 2.14), a row
  with the measured error;
* ONNX through ``torch.onnx.export(dynamo=True)`` (onnxscript) with dynamic axes, run in
  onnxruntime.

Distributed: :func:`data_parallel_check` trains a small ECA-ResNet for a few SGD steps with
DistributedDataParallel (or FSDP2 ``fully_shard``) over gloo processes and compares every
parameter with the same steps in one process on the combined batch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..deploy import check, compare_states, layer_case, layer_reference, model_inputs
from . import _ops
from .layer import ECA
from .models import create_model, randomize_batchnorm_

__all__ = [
    "data_parallel_check",
    "dynamic_shapes",
    "export_onnx",
    "export_program",
    "run_export_matrix",
]

# torch.jit.script cannot compile the layer's Python-side config and input check; the message
# names the layer's source (a model's second attempt in one process: "Can't redefine method:
# forward on class: __torch__.eca_multi.torch.layer...ECA")
SCRIPT_UNSUPPORTED = ("RuntimeError", r"eca_multi[/.]torch[/.](layer|_ops)")


def dynamic_shapes(min_side: int) -> dict:
    """Batch, height and width dynamic; channels static (the layer is built for C channels).

    ``min_side``: smallest height / width the export accepts. For a ResNet use 33 or more: at a
    side of 32 or less the last feature map is 1 x 1 and torch.export adds a guard for that case.
    """
    dim = torch.export.Dim
    spec = {0: dim("batch", min=1, max=4096), 2: dim("height", min=min_side, max=8192)}
    spec[3] = dim("width", min=min_side, max=8192)
    return {"x": spec}


def export_program(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, min_side: int):
    """``torch.export`` with dynamic batch and spatial size, saved to ``path`` (``.pt2``)."""
    ep = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes(min_side))
    torch.export.save(ep, str(path))
    return torch.export.load(str(path))


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    min_side: int,
    metadata: dict[str, str] | None = None,
    optimize: bool = True,
):
    """ONNX via the dynamo exporter (``dynamo=True``, needs onnxscript); dynamic N, H, W.

    ``metadata`` goes into the model's ``metadata_props`` (an ECA layer records
    ``eca.data_format``, ``eca.padding`` and ``eca.gate``, which ``--impl onnx:`` reads).
    ``optimize=False`` keeps every parameter a named initializer of its own shape (the
    exporter's optimizer folds ECA's (1, 1, k) kernel into a (k, C) constant); onnxruntime still
    optimizes the graph when it loads it.
    """
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=dynamic_shapes(min_side),
        optimize=optimize,
        verbose=False,
    )
    assert program is not None  # dynamo=True: an ONNXProgram (None only from the old exporter)
    program.model.metadata_props.update(metadata or {})
    program.save(str(path))
    return Path(path)


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def layer_metadata(layer: ECA) -> dict[str, str]:
    """What an ONNX file of the layer cannot say by itself: its data format, padding and gate."""
    cfg = layer.config
    return {"eca.data_format": cfg.data_format, "eca.padding": cfg.padding, "eca.gate": cfg.gate}


def _layer(case: dict) -> ECA:
    layer = ECA(channels=64).eval()
    with torch.no_grad():
        layer.conv.weight.copy_(torch.from_numpy(case["weight"]))
    return layer


def run_export_matrix(models: Sequence[str], workdir: str | os.PathLike) -> list[dict]:
    """One row per export path x model (see :mod:`eca_multi.deploy`)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    work = Path(workdir)
    rows = []
    module: nn.Module
    for name in models:
        if name == "layer":
            case = layer_case("channels_first")
            module, want = _layer(case), layer_reference(case)
            ex, x, note, side = case["export_x"], case["x"], case["note"], 1
        else:
            torch.manual_seed(0)  # the same random model every run: a row's error is reproducible
            module = randomize_batchnorm_(create_model(name), seed=0, image_size=64).eval()
            ex, x, note = model_inputs("channels_first")
            with torch.no_grad():
                want = module(torch.from_numpy(x)).numpy()
            side = 64
        tex, tx = torch.from_numpy(ex), torch.from_numpy(x)

        def run_export(module=module, tex=tex, tx=tx, name=name, side=side, want=want):
            with torch.no_grad():
                ep = export_program(module, tex, work / f"{name}.pt2", side)
                return ep.module()(tx).numpy(), want

        def run_trace(module=module, tex=tex, tx=tx, name=name, want=want):
            with torch.no_grad():
                traced = torch.jit.trace(module, (tex,), check_trace=False)
                torch.jit.save(traced, str(work / f"{name}.trace.pt"))
                return torch.jit.load(str(work / f"{name}.trace.pt"))(tx).numpy(), want

        def run_script(module=module, tx=tx, name=name, want=want):
            scripted = torch.jit.script(module)
            torch.jit.save(scripted, str(work / f"{name}.script.pt"))
            with torch.no_grad():
                return torch.jit.load(str(work / f"{name}.script.pt"))(tx).numpy(), want

        def run_onnx(module=module, tex=tex, x=x, name=name, side=side, want=want):
            # the layer's file keeps conv.weight as its (1, 1, k) initializer (--impl onnx: sets it)
            layer = name == "layer"
            meta = layer_metadata(module) if layer else None
            path = export_onnx(
                module, tex, work / f"{name}.onnx", side, metadata=meta, optimize=not layer
            )
            return _onnxruntime(path, x), want

        rows.append(check("torch.export", name, run_export, note=note))
        rows.append(check("torchscript.trace", name, run_trace, note=note))
        rows.append(
            check("torchscript.script", name, run_script, documented=SCRIPT_UNSUPPORTED, note=note)
        )
        rows.append(check("onnx.dynamo+ort", name, run_onnx, note=note))
    return rows


# ---------------------------------------------------------------------------------------------
# distributed: DDP / FSDP over gloo == one process on the combined batch


def _batches(steps: int, batch: int, size: int, num_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(batch, 3, size, size, generator=g)
        out.append((x, torch.randint(0, num_classes, (batch,), generator=g)))
    return out


def _new_model(arch: str, num_classes: int) -> nn.Module:
    torch.manual_seed(0)  # every rank and the single-process run start from the same weights
    return create_model(arch, num_classes=num_classes)


def train_steps(
    model: nn.Module, batches, rank: int = 0, world: int = 1, lr: float = 0.05
) -> nn.Module:
    """SGD with momentum; rank ``r`` of ``world`` takes its contiguous share of each batch.

    BatchNorm runs on its running statistics (frozen BN, its affine parameters still train):
    torch's SyncBatchNorm refuses CPU modules under DDP ("SyncBatchNorm layers only work with GPU
    modules"), and with per-rank batch statistics DDP is by design not the combined-batch run.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for m in model.modules():
        if isinstance(m, _ops.BATCH_NORMS):
            m.eval()  # NOTE: frozen BN statistics (see the docstring)
    for x, y in batches:
        n = x.shape[0] // world
        xs, ys = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    return model


def _rank_main(rank: int, world: int, init: str, out: str, engine: str, cfg: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = _new_model(cfg["arch"], cfg["num_classes"])
        data = _batches(cfg["steps"], cfg["batch"], cfg["size"], cfg["num_classes"], cfg["seed"])
        if engine == "ddp":
            ddp = nn.parallel.DistributedDataParallel(model)  # gradients all-reduced (mean)
            train_steps(ddp, data, rank, world)
            state = ddp.module.state_dict()
        elif engine == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for stage in ("layer1", "layer2", "layer3", "layer4"):
                fully_shard(model.get_submodule(stage))  # FSDP2: parameters sharded per stage
            fully_shard(model)
            train_steps(model, data, rank, world)
            state = {
                k: v.full_tensor() if hasattr(v, "full_tensor") else v
                for k, v in model.state_dict().items()
            }  # DTensor shards gathered
        else:
            raise ValueError(f"engine must be 'ddp' or 'fsdp', got {engine!r}")
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in state.items()}, out)
        # every rank tears gloo down together: a rank that destroyed its group while rank 0 was
        # still saving aborted in gloo ("terminate called without an active exception", SIGABRT)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def data_parallel_check(
    engine: str = "ddp",
    world: int = 2,
    arch: str = "eca_resnet18",
    steps: int = 3,
    batch: int = 4,
    size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
) -> dict:
    """Train with DDP or FSDP2 on ``world`` gloo processes and in one process; compare.

    Returns {"engine", "world", "arch", "steps"} and :func:`eca_multi.deploy.compare_states` of
    every parameter and buffer after ``steps`` steps (distributed vs single process).
    """
    from torch.multiprocessing.spawn import spawn  # torch.multiprocessing.spawn, the function

    if batch % world:
        raise ValueError(f"batch {batch} must be divisible by world size {world}")
    cfg = dict(arch=arch, steps=steps, batch=batch, size=size, num_classes=num_classes, seed=seed)
    single = train_steps(
        _new_model(arch, num_classes), _batches(steps, batch, size, num_classes, seed)
    )
    want = single.state_dict()
    with tempfile.TemporaryDirectory(prefix="eca-ddp-") as tmp:
        out = os.path.join(tmp, "rank0.pt")
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        spawn(_rank_main, args=(world, init, out, engine, cfg), nprocs=world, join=True)
        got = torch.load(out, weights_only=True)
    start = _new_model(arch, num_classes).state_dict()
    res = compare_states(got, want, start)
    return {"engine": engine, "world": world, "arch": arch, "steps": steps, **res}
