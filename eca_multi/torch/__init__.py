"""PyTorch backend of eca-multi: ``from eca_multi.torch import ECA``.

:class:`ECA` is a ``torch.nn.Module`` whose state dict is ``{"conv.weight": (1, 1, k)}``, the key
and layout of the official ECA-Net code and of timm, so their weights load with
``load_state_dict``. :func:`export_canonical` / :func:`load_canonical` convert to and from the
framework-free canonical weights (see :mod:`eca_multi.weights`).
"""

from .canonical import export_canonical, load_canonical
from .layer import ECA
from .models import (
    create_model,
    eca_mobilenet_v2,
    eca_resnet18,
    eca_resnet34,
    eca_resnet50,
    eca_resnet101,
    eca_resnet152,
    export_canonical_model,
    load_canonical_model,
)

__all__ = [
    "ECA",
    "create_model",
    "eca_mobilenet_v2",
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
    "export_canonical",
    "export_canonical_model",
    "load_canonical",
    "load_canonical_model",
]
