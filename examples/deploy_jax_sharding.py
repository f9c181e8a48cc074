"""Data-parallel training of a Flax NNX ECA-ResNet with jax.sharding over 4 devices, checked.

The batch is placed with ``NamedSharding(mesh, P("data"))`` over a 1-D device mesh and the
parameters replicated; ``nnx.jit`` compiles one SPMD program, so after a few SGD steps every
parameter and BatchNorm statistic must equal the single-device run (BatchNorm frozen on its
running statistics; ``--batchnorm batch`` trains on global batch statistics, see
``eca_multi.flax.deploy.sharded_check``). On a CPU host the 4 devices are simulated: this
script sets ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts. On
GPUs / TPUs the same code uses the real devices.

Run: python examples/deploy_jax_sharding.py [--devices 4] [--steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--arch", default="eca_resnet18")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--batchnorm", choices=("frozen", "batch"), default="frozen")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    flag = f"--xla_force_host_platform_device_count={a.devices}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

    from eca_multi.flax.deploy import sharded_check  # imports JAX: after XLA_FLAGS

    tol = 1e-5  # float32: sharded reductions (BN moments, gradient sums) in another order
    batch = 2 * a.devices
    res = sharded_check(a.devices, a.arch, a.steps, batch, a.size, batchnorm=a.batchnorm)
    ok = res["max_scaled_diff"] <= tol and res["param_devices"] == a.devices
    head = (
        f"NamedSharding over {res['devices']} {res['platform']} devices (batch "
        f"{res['batch_sharding']}, params on {res['param_devices']} devices) vs 1 device, "
        f"{res['arch']}, {res['steps']} steps, {res['batchnorm']} BatchNorm"
    )
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
