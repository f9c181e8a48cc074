"""Port ``hf-hub:timm/eca_nfnet_l0.ra2_in1k`` from a local Hugging Face cache to Keras 3 and Flax.

The hub name resolves through huggingface_hub's own cache (``HF_HOME`` / ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE=1`` here); the architecture comes from the repository's ``config.json`` and its
pretrained config (input size, mean / std, crop) travels into the outputs' metadata::

    python examples/port_hub_example.py [--hf-home DIR] [--out DIR]

With ``--hf-home`` pointing at a real cache that holds the repository (after one online
``eca-multi port hf-hub:timm/eca_nfnet_l0.ra2_in1k ...``), the real weights are ported. Without
it, a cache is built in a temp folder the way huggingface_hub lays one out (blobs, a snapshot of
links, refs/main) with timm's model in random, calibrated weights and a config.json written by
timm's own ``save_config_for_hf``, so the example runs with no network.

The same from the shell::

    HF_HUB_OFFLINE=1 eca-multi port hf-hub:timm/eca_nfnet_l0.ra2_in1k --to keras -o l0.keras \
        --verify
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch  # torch before TensorFlow in one process; timm (which imports huggingface_hub) later

REPO = "timm/eca_nfnet_l0.ra2_in1k"


def build_cache(home: Path) -> None:
    """A stand-in hub cache under ``home``: ``hub/models--timm--eca_nfnet_l0.ra2_in1k``."""
    import timm
    from safetensors.torch import save
    from timm.models._hub import save_config_for_hf

    from eca_multi.hub import seed_cache
    from eca_multi.torch.models import randomize_batchnorm_

    torch.manual_seed(0)
    model = timm.create_model("eca_nfnet_l0", pretrained=False)
    randomize_batchnorm_(model, seed=0, name="eca_nfnet_l0", image_size=64)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.json"
    save_config_for_hf(model, str(config))
    files = {"model.safetensors": save(model.state_dict()), "config.json": config.read_bytes()}
    seed_cache(home / "hub", REPO, files)  # huggingface_hub's layout: blobs, snapshot, refs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hf-home", type=Path, default=None, help="HF_HOME holding the repository")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a temp dir)")
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="eca-hub-"))
    out.mkdir(parents=True, exist_ok=True)
    home = a.hf_home or out / "hf_home"
    # huggingface_hub reads these once, when it is first imported (timm imports it): set them
    # before anything imports timm or huggingface_hub
    os.environ.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_HUB_OFFLINE="1")
    if a.hf_home is None:
        build_cache(home)

    from eca_multi.port import port

    for to, name in (("keras", "eca_nfnet_l0.keras"), ("flax", "eca_nfnet_l0.msgpack")):
        report = port(
            f"hf-hub:{REPO}",
            None,  # the architecture comes from config.json
            to,
            out / name,
            verify=True,
            force=True,
            progress=False,
            verify_batch=1,
        )
        print(report, end="\n\n")


if __name__ == "__main__":
    main()
