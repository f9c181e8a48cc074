"""Flax backend of eca-multi: ECA as a Flax NNX module (primary) and a Linen module.

    from eca_multi.flax import ECA, export_canonical, load_canonical   # NNX
    from eca_multi.flax import linen                                   # linen.ECA and its
                                                                       # canonical functions

NNX: ``export_canonical(layer)`` / ``load_canonical(layer, state)`` (in place). Linen modules hold
no weights, so ``linen.export_canonical(module, variables)`` reads a variables dict and
``linen.load_canonical(module, variables, state)`` returns a new one.
"""

from . import linen
from .nnx import ECA, export_canonical, load_canonical

__all__ = ["ECA", "export_canonical", "linen", "load_canonical"]
