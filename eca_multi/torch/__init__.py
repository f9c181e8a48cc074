"""PyTorch backend of eca-multi: ``from eca_multi.torch import ECA``.

:class:`ECA` is a ``torch.nn.Module`` whose state dict is ``{"conv.weight": (1, 1, k)}``, the key
and layout of the official ECA-Net code and of timm, so their weights load with
``load_state_dict``. :func:`export_canonical` / :func:`load_canonical` convert to and from the
framework-free canonical weights (see :mod:`eca_multi.weights`).
"""

from .canonical import export_canonical, load_canonical
from .layer import ECA

__all__ = ["ECA", "export_canonical", "load_canonical"]
