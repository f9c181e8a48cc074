"""Data-parallel training of an ECA-ResNet with PyTorch DDP (or FSDP2) over gloo, checked.

Two CPU processes (gloo) each take half of every batch; DistributedDataParallel averages the
gradients, so after a few SGD steps every parameter must equal the same steps run in one process
on the combined batch. The same code runs on GPUs with the nccl backend (one process per GPU).

Run: python examples/deploy_torch_ddp.py [--engine ddp|fsdp] [--steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from eca_multi.torch.deploy import data_parallel_check

TOL = 1e-5  # float32: the two runs sum the same gradients in a different order


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("ddp", "fsdp"), default="ddp")
    p.add_argument("--world", type=int, default=2, help="processes")
    p.add_argument("--arch", default="eca_resnet18")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    res = data_parallel_check(a.engine, world=a.world, arch=a.arch, steps=a.steps, size=a.size)
    tol = TOL
    ok = res["max_scaled_diff"] <= tol
    head = f"{a.engine} x{res['world']} (gloo) vs 1 process, {res['arch']}, {res['steps']} steps"
    print(
        f"{head}: max |diff| {res['max_abs_diff']:.1e}, scaled {res['max_scaled_diff']:.1e} "
        f"over {res['tensors']} tensors (worst {res['worst']}); training moved weights by up to "
        f"{res['max_abs_update']:.1e} -> " + ("OK" if ok else f"FAIL (> {tol:.0e})")
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**res, "tolerance": tol, "ok": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
