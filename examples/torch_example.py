"""30-second tour of the PyTorch ECA: build, run, train a step, export and reload canonical weights.

Run: python examples/torch_example.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from eca_multi.torch import ECA, export_canonical, load_canonical
from eca_multi.weights import load_file, save_file


def main() -> None:
    torch.manual_seed(0)
    # k from the paper's rule: C = 256 -> k = 5; timm's variant would be min_kernel_size=3
    eca = ECA(channels=256)
    print(eca, "state_dict:", {k: tuple(v.shape) for k, v in eca.state_dict().items()})

    x = torch.randn(8, 256, 14, 14)
    y = eca(x)
    print("forward:", tuple(x.shape), "->", tuple(y.shape), y.dtype)

    # one training step inside a tiny model
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 256, 3, padding=1),
        eca,
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    before = eca.conv.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    print(
        f"train step: loss={loss.item():.4f}, "
        f"ECA kernel moved by {float((eca.conv.weight.detach() - before).abs().max()):.2e}"
    )

    # bf16 autocast: the conv before ECA runs in bf16; ECA keeps its input dtype but computes
    # the pooled vector, the k-tap conv and the gate in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model[0](images)
        print("autocast:", features.dtype, "-> ECA ->", eca(features).dtype)

    # canonical weights: framework-free, loadable by the Keras and Flax layers too
    with tempfile.TemporaryDirectory() as tmp:
        path = save_file(Path(tmp) / "eca.safetensors", export_canonical(eca), {"source": "torch"})
        state, meta = load_file(path)
        fresh = ECA(channels=256)
        load_canonical(fresh, state)
        assert torch.equal(fresh(x), eca(x))
        print("canonical round trip via", path.name, "ok; metadata:", meta)


if __name__ == "__main__":
    main()
