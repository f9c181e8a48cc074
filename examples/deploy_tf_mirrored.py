"""Keras ECA-ResNet trained with tf.distribute.MirroredStrategy over 2 CPU devices, checked.

The host CPU is split into 2 logical devices; MirroredStrategy runs one replica on each, splits
every global batch between them and sums the gradients. BatchNorm runs on its moving statistics
(frozen, the fine-tuning setting), so after a few SGD steps every weight must equal the
single-device run (``--batchnorm synchronized`` shows Keras' synchronized BatchNorm instead; see
``eca_multi.keras.deploy.mirrored_check`` for why that is not float32-equal here). On a machine
with GPUs the same code mirrors over the GPUs.

Run: python examples/deploy_tf_mirrored.py [--replicas 2] [--steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--arch", default="eca_resnet18")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--batchnorm", choices=("frozen", "synchronized"), default="frozen")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "tensorflow"  # before Keras is imported

    from eca_multi.keras.deploy import mirrored_check

    tol = 1e-5  # float32: per-replica gradient sums in another order
    batch = 2 * a.replicas
    res = mirrored_check(a.replicas, a.arch, a.steps, batch, a.size, batchnorm=a.batchnorm)
    ok = res["max_scaled_diff"] <= tol and res["replicas"] == a.replicas
    head = (
        f"MirroredStrategy over {res['replicas']} devices {res['devices']} vs 1 device, "
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
