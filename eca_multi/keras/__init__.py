"""eca-multi for Keras 3: ECA and the paper's channel-attention family, canonical-weight adapters.

Runs on the tensorflow, jax and torch Keras backends (``KERAS_BACKEND``), with ``keras.ops`` only.
:func:`export_canonical` / :func:`load_canonical` take any family layer (ECA included).

Example:
    >>> from eca_multi.keras import ECA, export_canonical, make_attention
    >>> layer = ECA(channels=64)
    >>> export_canonical(layer)["conv.weight"].shape
    (1, 1, 3)
    >>> make_attention("se_gc", 64, groups=4)
    SEGC(channels=64, groups=4, data_format='channels_last')
"""

from .family import (
    ATTENTIONS,
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
from .models import create_model
from .preprocess import preprocess_layers

__all__ = [
    "ATTENTIONS",
    "ECA",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "create_model",
    "export_canonical",
    "export_canonical_model",
    "from_config",
    "load_canonical",
    "load_canonical_model",
    "load_weights_file",
    "make_attention",
    "preprocess_layers",
    "save_weights_file",
]
