"""Port an official ECA-Net checkpoint (``*.pth.tar``) to Keras 3 and Flax, with verification.

The authors' checkpoints (https://github.com/BangguWu/ECANet, e.g. ``eca_resnet50_k3557.pth.tar``)
are ``torch.save`` dicts ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}`` whose keys
carry DataParallel's ``module.`` prefix. Pass one with ``--checkpoint``; without it, a randomly
initialised ECA-ResNet-18 (random BatchNorm statistics) is written in exactly that layout first::

    python examples/port_official_example.py [--checkpoint eca_resnet50_k3557.pth.tar
                                              --arch eca_resnet50] [--out DIR]

The same from the command line::

    eca-multi port eca_resnet50_k3557.pth.tar --arch eca_resnet50 --to keras \
        -o eca_resnet50.weights.h5 --verify
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch  # torch before TensorFlow in one process

from eca_multi.port import load_model, port
from eca_multi.torch.models import create_model, randomize_batchnorm_


def fake_official_checkpoint(arch: str, path: Path) -> Path:
    """A random-weight stand-in saved the way the authors' train script saves (module. keys)."""
    model = randomize_batchnorm_(create_model(arch), seed=0)
    torch.save(
        {
            "epoch": 100,
            "arch": arch,
            "best_prec1": torch.tensor(0.1),
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(),
        },
        path,
    )
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="an official .pth.tar")
    p.add_argument("--arch", default="eca_resnet18", help="its architecture (eca-multi models)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a temp dir)")
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="eca-port-"))
    out.mkdir(parents=True, exist_ok=True)
    src = a.checkpoint or fake_official_checkpoint(a.arch, out / f"{a.arch}.pth.tar")

    # 1. official .pth.tar -> Keras .weights.h5; verify=True reloads the written file, runs it and
    #    the torch model on one random 224x224 batch and fails above 1e-4 max abs logit difference
    keras_report = port(
        src, a.arch, "keras", out / f"{a.arch}.weights.h5", verify=True, force=True, progress=False
    )
    print(keras_report, end="\n\n")

    # 2. the same checkpoint -> our Flax NNX export
    flax_report = port(
        src, a.arch, "flax", out / f"{a.arch}.msgpack", verify=True, force=True, progress=False
    )
    print(flax_report, end="\n\n")

    # 3. use the ported models: each loads with its framework's own loader
    _, keras_model = load_model(keras_report.out, a.arch)
    _, flax_model = load_model(flax_report.out, a.arch)
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    print(f"Keras model {keras_model.name!r}: {trainable:,} trainable parameters")
    print(f"Flax model {type(flax_model).__name__} ({flax_model.arch_name}) in eval mode")


if __name__ == "__main__":
    main()
