"""PyTorch backend of eca-multi: ``from eca_multi.torch import ECA``.

:class:`ECA` is a ``torch.nn.Module`` whose state dict is ``{"conv.weight": (1, 1, k)}``, the key
and layout of the official ECA-Net code and of timm, so their weights load with
``load_state_dict``. :func:`export_canonical` / :func:`load_canonical` convert to and from the
framework-free canonical weights (see :mod:`eca_multi.weights`).

The rest of the paper's channel-attention family (:mod:`eca_multi.torch.family`): :class:`SE`
(timm ``SEModule`` names), :class:`SEVar1`, :class:`SEVar2`, :class:`SEVar3`, :class:`SEGC`,
:class:`ECANS`; :func:`make_attention` builds any member by name, :func:`from_config` from a
config, and every model builder takes ``attention=`` / ``attention_kwargs=``.
"""

from .family import ECANS, SE, SEGC, SEVar1, SEVar2, SEVar3, from_config, make_attention
from .io import export_canonical, export_canonical_model, load_canonical, load_canonical_model
from .layer import ECA
from .models import (
    create_model,
    eca_mobilenet_v2,
    eca_resnet18,
    eca_resnet34,
    eca_resnet50,
    eca_resnet101,
    eca_resnet152,
)

__all__ = [
    "ECA",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "create_model",
    "eca_mobilenet_v2",
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
    "export_canonical",
    "export_canonical_model",
    "from_config",
    "load_canonical",
    "load_canonical_model",
    "make_attention",
]
