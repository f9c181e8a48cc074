"""Flax backend of eca-multi: ECA and its family as Flax NNX modules (primary) and Linen modules.

    from eca_multi.flax import ECA, export_canonical, load_canonical   # NNX
    from eca_multi.flax import SE, SEVar1, SEVar2, SEVar3, SEGC, ECANS, make_attention
    from eca_multi.flax import linen                                   # linen.ECA, linen.SE ...
                                                                       # and canonical functions

NNX: ``export_canonical(layer)`` / ``load_canonical(layer, state)`` (in place). Linen modules hold
no weights, so ``linen.export_canonical(module, variables)`` reads a variables dict and
``linen.load_canonical(module, variables, state)`` returns a new one.
NNX ``export_canonical`` / ``load_canonical`` take ECA and every family module.
"""

from . import linen
from .family import (
    ECANS,
    SE,
    SEGC,
    SEVar1,
    SEVar2,
    SEVar3,
    export_canonical,
    from_config,
    load_canonical,
    make_attention,
)
from .io import export_canonical_model, load_canonical_model, load_weights_file, save_weights_file
from .layer import ECA
from .models import abstract_model, create_model

__all__ = [
    "ECA",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "abstract_model",
    "create_model",
    "export_canonical",
    "export_canonical_model",
    "from_config",
    "linen",
    "load_canonical",
    "load_canonical_model",
    "load_weights_file",
    "make_attention",
    "save_weights_file",
]
