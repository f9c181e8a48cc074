"""Conformance adapters for ECA implementations outside eca-multi (the open suite's peers).

* :mod:`.timm`: timm's ``EcaModule`` and ``CecaModule`` (``timm-eca``, ``timm-ceca``).
* :mod:`.official`: the ECA-Net authors' ``eca_layer``, as published (``official``).
* :mod:`.onnx`: an ONNX file of an ECA layer, run in onnxruntime (``onnx:PATH``).

Each is registered in the ``eca_multi.conformance`` entry point group (pyproject.toml), so
``eca-multi conformance --impl timm-eca`` finds it; the interface is
:mod:`eca_multi.conformance.impl`. These modules import their framework: they sit beside the
harnesses, above the framework-free core.
"""
