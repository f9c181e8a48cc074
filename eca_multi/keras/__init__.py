"""eca-multi for Keras 3: the ECA layer and its canonical-weight adapter.

Runs on the tensorflow, jax and torch Keras backends (``KERAS_BACKEND``), with ``keras.ops`` only.

Example:
    >>> from eca_multi.keras import ECA, export_canonical
    >>> layer = ECA(channels=64)
    >>> export_canonical(layer)["conv.weight"].shape
    (1, 1, 3)
"""

from .layer import ECA, export_canonical, load_canonical

__all__ = ["ECA", "export_canonical", "load_canonical"]
