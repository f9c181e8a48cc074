"""An ONNX file of an ECA layer as a conformance peer: ``--impl onnx:PATH`` (onnxruntime).

The file must hold exactly one initializer of shape (1, 1, k): ECA's weight (what
``torch.onnx.export`` of an ECA layer writes). For each case the runner writes the case's kernel
into that initializer and runs the graph in onnxruntime, forward only. What the graph accepts
is read from the file:

* k: the initializer's shape; rank (spatial dims) and dtype: the graph input; channel count and
  any other static size: the input's fixed dimensions.
* data format, padding and gate: the model's ``metadata_props`` ``eca.data_format``,
  ``eca.padding``, ``eca.gate`` when present (``eca-multi export`` writes them); otherwise
  channels_first and zero padding, and the gate from the graph's ops (``HardSigmoid`` or
  ``Sigmoid``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ..conformance.cases import Case
from ..conformance.impl import Capabilities
from ..registry import package_versions

__all__ = ["OnnxFile", "from_path"]

_DTYPES = {
    onnx.TensorProto.FLOAT: ("float32", np.float32),
    onnx.TensorProto.FLOAT16: ("float16", np.float16),
}


class OnnxFile:
    """The adapter for one ONNX file (raises ``ValueError`` for a file it cannot run)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"onnx:{path}: no such file")
        try:
            self.model = onnx.load(str(self.path))
        except Exception as e:  # a file that is not ONNX protobuf
            raise ValueError(f"onnx:{path}: not an ONNX model ({type(e).__name__}: {e})") from e
        graph = self.model.graph
        kernels = [t for t in graph.initializer if list(t.dims)[:2] == [1, 1] and len(t.dims) == 3]
        if len(kernels) != 1:
            raise ValueError(
                f"onnx:{path}: {len(kernels)} initializers of shape (1, 1, k); the runner needs "
                "exactly one (ECA's weight)"
            )
        self.kernel_name, k = kernels[0].name, int(kernels[0].dims[2])
        names = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in names]
        if len(inputs) != 1:
            raise ValueError(f"onnx:{path}: {len(inputs)} graph inputs; an ECA layer has one")
        self.input = inputs[0]
        elem = self.input.type.tensor_type.elem_type
        if elem not in _DTYPES:
            raise ValueError(
                f"onnx:{path}: input element type {onnx.TensorProto.DataType.Name(elem)}; the "
                "runner takes FLOAT or FLOAT16"
            )
        dtype, self.np_dtype = _DTYPES[elem]
        dims = self.input.type.tensor_type.shape.dim
        self.static = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        meta = {p.key: p.value for p in self.model.metadata_props}
        ops = {n.op_type for n in graph.node}
        data_format = meta.get("eca.data_format", "channels_first")
        gate = meta.get("eca.gate") or ("hard_sigmoid" if "HardSigmoid" in ops else "sigmoid")
        c_axis = 1 if data_format == "channels_first" else len(self.static) - 1
        c = self.static[c_axis] if len(self.static) > 2 else None
        self.name = f"onnx:{self.path.name}"
        self.description = (
            f"{self.path.name} in onnxruntime (k = {k}, input {self._shape_text()} {dtype}, "
            f"{data_format}, {meta.get('eca.padding', 'zeros')} padding, {gate})"
        )
        self.capabilities = Capabilities(
            spatial_dims=(len(self.static) - 2,),
            data_formats=(data_format,),
            paddings=(meta.get("eca.padding", "zeros"),),
            gates=(gate,),
            dtypes=(dtype,),
            kernel_sizes=(k,),
            channels=None if c is None else (c,),
            gradients=False,
            weight_layout="(1, 1, k)",
        )

    def _shape_text(self) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in self.static) + ")"

    def versions(self) -> dict:
        return package_versions(("onnx", "onnxruntime"))

    def limits(self, case: Case) -> str | None:
        for axis, (want, got) in enumerate(zip(self.static, case.shape, strict=True)):
            if want is not None and want != got:
                return f"input shape {case.shape}: the graph fixes axis {axis} to {want}"
        return None

    def build(self, case: Case, weights: Mapping[str, np.ndarray]):
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        for t in model.graph.initializer:
            if t.name == self.kernel_name:
                w = np.asarray(weights["conv.weight"]).astype(numpy_helper.to_array(t).dtype)
                t.CopyFrom(numpy_helper.from_array(w, t.name))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

        def forward(x: np.ndarray) -> np.ndarray:
            out = sess.run(None, {self.input.name: x.astype(self.np_dtype)})[0]
            return np.asarray(out, np.float64)

        return forward


def from_path(path: str) -> OnnxFile:
    """The ``onnx`` entry point: ``--impl onnx:PATH``."""
    return OnnxFile(path)


from_path.needs_argument = True  # type: ignore[attr-defined]
