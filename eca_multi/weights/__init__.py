"""Framework-free canonical weights: named layouts, the canonical schema, safetensors / npz io.

The canonical format is a flat ``{name: numpy array}`` in torch names and layouts (ECA's kernel is
``{"conv.weight": (1, 1, k)}``), stored as safetensors (or ``.npz``). Every backend converts its
own variables to and from it through :mod:`eca_multi.weights.layouts`; porting between frameworks
is always source -> canonical -> target.
"""

from .io import FORMAT_VERSION, load_file, save_file
from .layouts import Layout, to_canonical, to_native
from .schema import WeightDtypeError, WeightMismatchError, check_state, eca_schema

__all__ = [
    "FORMAT_VERSION",
    "Layout",
    "WeightDtypeError",
    "WeightMismatchError",
    "check_state",
    "eca_schema",
    "load_file",
    "save_file",
    "to_canonical",
    "to_native",
]
