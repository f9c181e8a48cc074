"""Port a timm ECA-ResNet (``ecaresnet50d``) to Keras 3 and Flax, with verification.

timm's hub repositories hold ``model.safetensors``: a plain ``state_dict`` whose names are the
canonical names here. Pass one with ``--weights``; without it, ``timm.create_model("ecaresnet50d")``
with random weights (random BatchNorm statistics) is saved that way first::

    python examples/port_timm_example.py [--weights model.safetensors] [--arch ecaresnet50d]
                                         [--out DIR]

The ported Keras / Flax models go back to timm as well: ``eca-multi port ecaresnet50d.keras
--arch ecaresnet50d --to torch -o model.safetensors`` loads with ``timm.create_model(...,
pretrained=False).load_state_dict(..., strict=True)``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch  # noqa: F401  (torch before TensorFlow in one process)
from safetensors.torch import save_file

from eca_multi.port import port
from eca_multi.torch.models import randomize_batchnorm_


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=None, help="a timm model.safetensors")
    p.add_argument("--arch", default="ecaresnet50d", help="timm architecture name")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a temp dir)")
    p.add_argument("--size", type=int, default=224, help="verification image size (try 225)")
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="eca-port-"))
    out.mkdir(parents=True, exist_ok=True)
    src = a.weights
    if src is None:  # a random-weight stand-in for the hub file
        model = randomize_batchnorm_(timm.create_model(a.arch, pretrained=False), seed=0)
        src = out / "model.safetensors"
        save_file(model.state_dict(), str(src))

    # timm is the torch model: verification runs timm and the ported model on one random batch
    for to, name in (("keras", f"{a.arch}.keras"), ("flax", f"{a.arch}.msgpack")):
        report = port(
            src,
            a.arch,
            to,
            out / name,
            verify=True,
            force=True,
            progress=False,
            verify_size=a.size,
            verify_batch=1,
        )
        print(report, end="\n\n")


if __name__ == "__main__":
    main()
