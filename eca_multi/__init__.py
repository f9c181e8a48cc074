"""eca-multi: one ECA (Efficient Channel Attention, arXiv 1910.03151) for PyTorch, Keras 3 and Flax.

``import eca_multi`` loads NumPy only. Pick a backend by import path::

    from eca_multi.torch import ECA   # torch.nn.Module
    from eca_multi.keras import ECA   # Keras 3 layer (tensorflow, jax or torch backend)
    from eca_multi.flax import ECA    # Flax NNX module (eca_multi.flax.linen.ECA for Linen)

The NumPy float64 specification is :mod:`eca_multi.reference`.
"""

from importlib.metadata import PackageNotFoundError, version

from .spec import ECAConfig, kernel_size, make_config

try:  # the one version source: the package metadata (pyproject.toml [project] version)
    __version__ = version("eca-multi")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["ECAConfig", "__version__", "kernel_size", "make_config"]
