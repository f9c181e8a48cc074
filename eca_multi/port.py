"""Porting pipeline: any supported weight file -> canonical -> torch, Keras 3 or Flax, verified.

    report = port("eca_resnet50_k3557.pth.tar", "eca_resnet50", "keras", "eca50.weights.h5",
                  verify=True)
    print(report)  # source format, tensors, kernel sizes, max abs logit difference, top-5
    port("hf-hub:timm/ecaresnet26t.ra2_in1k", None, "flax", "eca26t.msgpack")  # arch: config.json

The source is read by :func:`read_source` (format detected by content, strict key / shape /
kernel-size checks, pickled code never executed); a ``hf-hub:owner/repo[@revision]`` name is
resolved by :mod:`eca_multi.hub` (``huggingface_hub``'s download and cache; the architecture and
timm's pretrained config come from the repository's ``config.json``). Targets:

* ``canonical``: safetensors (or ``.npz``) in torch names and layouts, with source metadata;
* ``torch``: official architectures -> ``.pth`` state_dict (or the official ``.pth.tar`` layout
  when the name ends so); timm architectures -> ``model.safetensors`` (what timm loads);
* ``keras``: ``.weights.h5`` or ``.keras`` (:func:`eca_multi.keras.io.save_weights_file`);
* ``flax``: our msgpack export (:func:`eca_multi.flax.io.save_weights_file`), or an Orbax
  checkpoint folder for an output named ``*.orbax`` (:mod:`eca_multi.flax.orbax`).

Every framework step goes through the target's ``eca_multi.<framework>.io`` module (the
:class:`eca_multi.registry.BackendIO` contract), found by module path in
:data:`eca_multi.registry.BACKENDS`: this module never branches on a framework's name, and a
backend whose folder is deleted is reported as not installed.

Outputs are written to a temp file and renamed; an existing file is replaced only with
``force=True``. ``verify=True`` loads the *written file* back into its framework, runs it and the
source model on the same random batch (eval mode) and raises :class:`VerificationError` when the
logits differ by more than the tolerance (1e-4 max abs).

timm's pretrained config (``info["pretrained_cfg"]``: from a hub repository's ``config.json``, or
from the metadata of a file eca-multi wrote) travels into every output's metadata
(:func:`eca_multi.preprocess.metadata_entries`) and is read back by :func:`read_source`;
:mod:`eca_multi.preprocess` turns it into the matching eval preprocessing.

No framework is imported at module import; each step imports the one it needs.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import archs, hub
from . import progress as progress_
from .preprocess import PretrainedConfig, cfg_from_metadata
from .registry import BACKENDS, CANONICAL_CONTAINERS, READERS, BackendNotInstalled, framework_of
from .weights.integrity import DIGEST_KEY, file_metadata, tensor_digest
from .weights.io import save_file, size_bound
from .weights.sources import (
    SourceError,
    arch_size_bound,
    check_num_classes,
    finish_source,
    read_container,
    sniff,
)

__all__ = [
    "TARGETS",
    "PortReport",
    "backend_io",
    "detect_format",
    "read_source",
    "VerificationError",
    "VerifyResult",
    "load_model",
    "model_from_state",
    "models_table",
    "parse_kernel_sizes",
    "port",
    "verify_models",
]

TARGETS = ("canonical", *BACKENDS)  # canonical, torch, keras, flax
TOLERANCE = 1e-4  # max abs logit difference (float32 through ~150 layers: measured <= 2e-5)
PROGRESS_MIN_TENSORS = 50  # show a progress bar from this many tensors on


class VerificationError(RuntimeError):
    """The ported model's logits differ from the source's by more than the tolerance."""

    def __init__(self, report: PortReport) -> None:
        self.report = report
        v = report.verify
        assert v is not None  # raised only after a verification ran
        super().__init__(
            f"verification failed: max abs logit difference {v.max_abs:.3e} > "
            f"tolerance {v.tolerance:.0e} ({report.src} -> {report.out}); the written file is "
            f"kept at {report.out} for inspection: delete it, or port again with --force"
        )


@dataclass
class VerifyResult:
    """Source vs target logits on one random batch."""

    source_framework: str
    target_framework: str
    batch_shape: tuple[int, ...]
    max_abs: float
    top1_agreement: float
    top5_agreement: float
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return bool(self.max_abs <= self.tolerance)

    def __str__(self) -> str:
        return (
            f"verify: {self.source_framework} vs {self.target_framework} on a random batch "
            f"{self.batch_shape}: max abs logit difference {self.max_abs:.3e} (tolerance "
            f"{self.tolerance:.0e}), top-1 agreement {self.top1_agreement:.0%}, top-5 "
            f"agreement {self.top5_agreement:.0%} -> {'OK' if self.ok else 'FAILED'}"
        )


@dataclass
class PortReport:
    """What :func:`port` did."""

    src: str
    source_format: str
    arch: str
    to: str
    out: str
    tensors: int
    kernel_sizes: Any
    num_classes: int
    seconds: float = 0.0
    source_info: dict = field(default_factory=dict)
    verify: VerifyResult | None = None

    def __str__(self) -> str:
        meta = {
            k: self.source_info[k] for k in ("epoch", "arch", "best_prec1") if k in self.source_info
        }
        hub_info = self.source_info.get("hub")
        if hub_info:  # where the hub file came from
            meta["file"] = f"{hub_info['file']} via huggingface_hub"
        lines = [
            f"source: {self.src} ({self.source_format}"
            + (f", {', '.join(f'{k}={_num(v)}' for k, v in meta.items())}" if meta else "")
            + ")",
            f"arch:   {self.arch} ("
            + ("from config.json; " if hub_info and hub_info.get("arch_from_config") else "")
            + f"{self.tensors} tensors, {self.num_classes} classes, ECA kernel "
            f"sizes {_ks_text(self.kernel_sizes)})",
        ]
        cfg = self.source_info.get("pretrained_cfg")
        if cfg is not None:
            lines.append(
                f"config: {PretrainedConfig.from_dict(cfg).summary()} (into the output's metadata)"
            )
        lines.append(f"wrote:  {self.out} ({self.to}) in {self.seconds:.1f} s")
        if self.verify is not None:
            lines.append(str(self.verify))
        return printable_name("\n".join(lines))  # a path that is not UTF-8 shows as \xNN


def printable_name(name: str) -> str:
    """A file name as valid text: bytes that are not UTF-8 (surrogate escapes) become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _num(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)  # float32 metadata: no 0.1000000015


def _ks_text(ks: Any) -> str:
    if isinstance(ks, Mapping):
        return ",".join(str(ks[i]) for i in sorted(ks))
    return ",".join(str(k) for k in ks)


# ---------------------------------------------------------------------------------------------
# progress


class _Tracked(Mapping):
    """A read-only view of a state dict that advances a progress bar per distinct key read."""

    def __init__(self, state: Mapping[str, Any], bar: progress_.Stage) -> None:
        self._state, self._bar = state, bar
        self._seen: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self._state[key]
        if key not in self._seen:
            self._seen.add(key)
            self._bar.update()
        return value

    def __iter__(self):
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __contains__(self, key: object) -> bool:
        return key in self._state


# ---------------------------------------------------------------------------------------------
# backends and sources


def backend_io(framework: str) -> ModuleType:
    """The ``io`` module of a backend (:class:`eca_multi.registry.BackendIO`), by module path.

    Raises:
        BackendNotInstalled: the backend's folder or its framework is missing.
    """
    try:
        backend = BACKENDS[framework]
    except KeyError:
        raise ValueError(f"unknown backend {framework!r}; known: {', '.join(BACKENDS)}") from None
    for name in backend.preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the order only matters when both frameworks are present
    try:
        return importlib.import_module(backend.io)
    except ImportError as e:
        raise BackendNotInstalled(
            f"the {framework} backend is not installed ({backend.io}: {e}); "
            f"pip install 'eca-multi[{framework}]'"
        ) from e


def detect_format(path: str | os.PathLike) -> str:
    """The source format of a weight file by its content (see :data:`eca_multi.registry.FORMATS`).

    The container is recognised from its bytes without a framework; its backend's io names the
    format (torch files are opened with ``weights_only=True`` to tell an official checkpoint from
    a bare state_dict).

    Raises:
        FileNotFoundError: no such file.
        SourceError: empty, truncated, corrupt, unsafe or of an unknown kind.
    """
    container = sniff(path)
    if container in CANONICAL_CONTAINERS:
        return container
    return backend_io(READERS[container]).detect_format(path, container)


def read_source(
    path: str | os.PathLike,
    arch: str,
    *,
    strict: bool = True,
    kernel_sizes: Any = None,
    num_classes: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read any supported weight file as canonical weights of ``arch``, checked strictly.

    Args:
        path: the weight file (format detected by content).
        arch: architecture name of :data:`eca_multi.archs.ARCHS`.
        strict: fail on missing or unexpected keys (shapes are always checked).
        kernel_sizes: None (the architecture's), explicit sizes, or ``"checkpoint"`` to accept
            whatever the weights hold.
        num_classes: classifier width; default read from the checkpoint.

    Returns:
        (canonical state in schema order, info) where info holds "format", "framework",
        "kernel_sizes", "num_classes", "path" and format metadata (official: epoch, arch,
        best_prec1; safetensors: metadata), and "pretrained_cfg" when the file records timm's
        pretrained config (files eca-multi wrote from a hub repository, or ported on from one).

    Raises:
        FileNotFoundError: no such file.
        SourceError: unreadable, unsafe, damaged or over the size cap.
        ValueError: kernel sizes or a class count that do not fit.
        WeightMismatchError: every missing / unexpected / mis-shaped key at once.
        WeightDtypeError: weights that are not floating point.
    """
    archs.get_arch(arch)
    check_num_classes(num_classes)  # before a reader builds a model of that width
    with size_bound(arch_size_bound(arch)):  # what this architecture can hold, at most
        container = sniff(path)
        if container in CANONICAL_CONTAINERS:
            state, info = read_container(path, container)
        else:
            io = backend_io(READERS[container])
            state, info = io.read_file(path, container, arch, num_classes)
    digest = (info.get("metadata") or {}).get(DIGEST_KEY)  # every reader puts a file's
    if digest is not None:  # metadata in info: one eca-multi wrote carries its tensors' sha256
        if tensor_digest(state) != digest:
            raise SourceError(
                f"{path}: integrity check failed: the tensor data differ from the sha256 "
                f"eca-multi recorded when it wrote the file ({info['format']}): the file is "
                "damaged or was edited"
            )
        info["integrity"] = "sha256 verified"
    state, info = finish_source(path, arch, state, info, kernel_sizes, num_classes, strict)
    cfg = cfg_from_metadata(info.get("metadata"))
    if cfg is not None:
        info["pretrained_cfg"] = cfg
    return state, info


def model_from_state(framework: str, arch: str, state: Mapping[str, Any], info: Mapping) -> Any:
    """Build ``arch`` in ``framework`` and load canonical ``state`` into it (strict)."""
    io = backend_io(framework)
    model = io.create_model(arch, info["num_classes"], info["kernel_sizes"])
    io.load_canonical_model(model, state, name=arch, strict=True)
    return model


def load_model(
    path: str | os.PathLike,
    arch: str,
    *,
    kernel_sizes: Any = "checkpoint",
    num_classes: int | None = None,
):
    """Load any supported weight file as a model of its own framework, the way a user would.

    Each framework's own files load through its io's ``load_file`` (Keras: ``load_weights_file``,
    Flax: our export, torch: the pickle into our model or timm's); canonical files build the
    torch model and ``load_state_dict``. Kernel sizes default to the file's; ``num_classes`` to
    the file's where the format records it.

    Returns:
        (framework name, model).
    """
    check_num_classes(num_classes)
    fmt = detect_format(path)
    framework = framework_of(fmt)
    if fmt in CANONICAL_CONTAINERS:
        state, info = read_source(path, arch, kernel_sizes=kernel_sizes, num_classes=num_classes)
        return framework, model_from_state(framework, arch, state, info)
    model = backend_io(framework).load_file(path, fmt, arch, num_classes, kernel_sizes)
    return framework, model


def _logits(framework: str, model: Any, x_nchw: np.ndarray) -> np.ndarray:
    """Eval-mode logits of a model for an NCHW float32 batch, as float64 NumPy."""
    return backend_io(framework).logits(model, x_nchw)


def nan_equal_max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference where NaN equals NaN and an infinity equals the same infinity (a
    bit-exact port of a model with NaN / Inf weights verifies); a NaN against a number is inf."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN vs a number
    return float(diff.max()) if diff.size else 0.0


def verify_models(
    source: tuple[str, Any],
    target: tuple[str, Any],
    *,
    batch: int = 2,
    size: int = 224,
    seed: int = 0,
    tolerance: float = TOLERANCE,
) -> VerifyResult:
    """Run two (framework, model) pairs on the same random batch and compare their logits."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    a, b = _logits(*source, x), _logits(*target, x)
    top5a, top5b = np.argsort(-a, 1)[:, :5], np.argsort(-b, 1)[:, :5]
    return VerifyResult(
        source[0],
        target[0],
        tuple(x.shape),
        nan_equal_max_abs(a, b),
        float(np.mean(top5a[:, 0] == top5b[:, 0])),
        float(np.mean([set(p) == set(q) for p, q in zip(top5a, top5b, strict=True)])),
        tolerance,
    )


# ---------------------------------------------------------------------------------------------
# writers


def _default_name(to: str, arch: str) -> str:
    return f"{arch}.safetensors" if to == "canonical" else backend_io(to).default_name(arch)


def _write(
    to: str, state: Mapping[str, Any], out: Path, arch: str, info: Mapping, force: bool
) -> None:
    if to == "canonical":  # framework-free
        if not out.name.endswith((".safetensors", ".npz")):
            raise ValueError(f"{out}: canonical output must end with .safetensors or .npz")
        meta = {
            "source": info["format"],
            "source_file": printable_name(Path(info["path"]).name),
            "arch": arch,
            "kernel_sizes": _ks_text(info["kernel_sizes"]),
            **({"source_hub": info["hub"]["name"]} if info.get("hub") else {}),
            **file_metadata(info),
        }
        save_file(out, state, meta, overwrite=force)
    else:
        backend_io(to).write_file(state, out, arch, info, overwrite=force)


def port(
    src: str | os.PathLike,
    arch: str | None,
    to: str,
    out: str | os.PathLike,
    *,
    verify: bool = False,
    force: bool = False,
    kernel_sizes: Any = None,
    num_classes: int | None = None,
    progress: bool = True,
    tolerance: float = TOLERANCE,
    verify_size: int = 224,
    verify_batch: int = 2,
) -> PortReport:
    """Port a weight file of ``arch`` to another framework (via canonical weights).

    Args:
        src: the source file (official ``.pth.tar``, torch ``.pth`` / ``.bin``, timm or canonical
            ``.safetensors``, ``.npz``, our Keras ``.weights.h5`` / ``.keras`` or Flax export), or
            a hub name ``"hf-hub:owner/repo[@revision]"`` (:mod:`eca_multi.hub`: its
            ``model.safetensors`` or ``pytorch_model.bin`` and ``config.json``).
        arch: architecture name (``eca-multi models`` lists them); None for a hub name takes the
            ``architecture`` of its ``config.json`` (required for files).
        to: "canonical", "torch", "keras" or "flax".
        out: the output file (an existing folder gets a default name inside it).
        verify: load the written file back, compare logits with the source on a random batch and
            raise :class:`VerificationError` above ``tolerance``.
        force: replace an existing output file.
        kernel_sizes: None (the architecture's, checked against the checkpoint), explicit sizes
            (or their text, "3,5,5,7"), or "checkpoint" (build with whatever the checkpoint
            holds).
        num_classes: classifier width (default: read from the checkpoint).
        progress: show a progress bar on stderr for models with many tensors.
        tolerance: the verification's max abs logit difference.
        verify_size: image side of the verification batch (224; odd sizes exercise ceil-mode
            pooling paths).
        verify_batch: images in the verification batch.

    Returns:
        A :class:`PortReport` (``print`` it).

    Raises:
        FileExistsError: ``out`` exists and not ``force``. FileNotFoundError: no ``src``.
        SourceError / ValueError / WeightMismatchError: unreadable, unsafe or mismatched source.
        HubError (a ValueError): a hub repository that is no ECA model eca-multi knows, or that
            cannot be found (online, or offline in the cache).
        VerificationError: verify=True and the logits differ beyond ``tolerance``.
    """
    t0 = time.perf_counter()
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r}; choose from {', '.join(TARGETS)}")
    source = _hub_source(src, arch)  # config.json only: the weights come once out is checked
    if source is not None:
        arch = source.arch
    elif arch is None:
        raise ValueError(
            f"{src}: the architecture is required for a weight file (--arch NAME, "
            f"`eca-multi models` lists them; only {hub.PREFIX} names carry their own)"
        )
    if isinstance(kernel_sizes, str):
        kernel_sizes = parse_kernel_sizes(kernel_sizes, arch)
    out = Path(out)
    suffixes = (".safetensors", ".npz") if to == "canonical" else backend_io(to).SUFFIXES
    if out.is_dir() and not out.name.endswith(tuple(suffixes)):  # *.orbax is itself a folder
        out = out / _default_name(to, arch)
    if out.exists() and not force:  # fail before any expensive work
        raise FileExistsError(f"{out} exists; pass force=True (CLI: --force) to replace it")
    if not out.name.endswith(tuple(suffixes)):
        raise ValueError(f"{out}: a {to} output must end with {' or '.join(suffixes)}")
    path = src if source is None else source.weights()  # hub: downloaded or from the cache
    state, info = read_source(path, arch, kernel_sizes=kernel_sizes, num_classes=num_classes)
    if source is not None:
        info["hub"] = {
            **source.describe(),
            "file": Path(path).name,
            "arch_from_config": source.arch_from_config,
        }
        if source.pretrained_cfg is not None:  # config.json wins over the file's metadata
            info["pretrained_cfg"] = source.pretrained_cfg
    info["sha256"] = tensor_digest(state)  # stored in the output's metadata (file_metadata)
    show = progress and len(state) >= PROGRESS_MIN_TENSORS
    with progress_.stage(len(state), f"converting to {to}", unit="tensors", enabled=show) as bar:
        _write(to, _Tracked(state, bar), out, arch, info, force)
        bar.update(len(state) - bar.n)  # tensors a writer did not read one by one
    report = PortReport(
        str(src),
        info["format"],
        arch,
        to,
        str(out),
        len(state),
        info["kernel_sizes"],
        info["num_classes"],
        source_info=info,
    )
    if verify:
        with progress_.stage(3, "verifying", unit="steps", enabled=show) as bar:
            source_model = (info["framework"], _source_model(path, arch, state, info))
            bar.update()
            target = load_model(out, arch, num_classes=info["num_classes"])
            bar.update()
            report.verify = verify_models(
                source_model, target, batch=verify_batch, size=verify_size, tolerance=tolerance
            )
            bar.update()
    report.seconds = time.perf_counter() - t0
    if report.verify is not None and not report.verify.ok:
        raise VerificationError(report)
    return report


def _hub_source(src: str | os.PathLike, arch: str | None) -> hub.HubModel | None:
    """A hub name resolved (its config.json read and checked); None for a file."""
    name = os.fspath(src)
    return hub.resolve(name, arch) if hub.is_hub_name(name) else None


def _source_model(src: str | os.PathLike, arch: str, state: Mapping, info: Mapping) -> Any:
    """The source as a model of its own framework, loaded the way its users load it."""
    return load_model(src, arch, num_classes=info["num_classes"])[1]


# ---------------------------------------------------------------------------------------------
# helpers for the command line


def parse_kernel_sizes(text: str | None, arch: str) -> Any:
    """CLI ``--kernel-sizes``: None, ``"checkpoint"`` or ``"3,5,5,7"`` (MobileNetV2: 17 values)."""
    if text is None or text == "checkpoint":
        return text
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ValueError(
            f"--kernel-sizes must be 'checkpoint' or comma-separated integers, got {text!r}"
        ) from None
    want = archs.default_kernel_sizes(arch)
    if len(ks) != len(want):
        raise ValueError(f"{arch} takes {len(want)} kernel sizes, got {len(ks)}: {text}")
    return dict(zip(sorted(want), ks, strict=True)) if isinstance(want, Mapping) else ks


def _param_count(name: str) -> int:
    """Trainable parameters (BatchNorm running statistics and counters are buffers)."""
    buffers = (".running_mean", ".running_var", ".num_batches_tracked")
    return sum(
        int(np.prod(shape))
        for key, (shape, _) in archs.schema(name).items()
        if not key.endswith(buffers)
    )


def models_table() -> str:
    """The architectures, their family, ECA kernel sizes and parameter counts, as text."""
    rows = [("name", "family", "layers", "ECA kernel sizes", "params")]
    for name, arch in archs.ARCHS.items():
        ks = arch.kernel_rule_text()
        rows.append((name, arch.family, arch.layers_text(), ks, f"{_param_count(name):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + f"  {{:>{widths[-1]}}}"
    return "\n".join(fmt.format(*r) for r in rows)
