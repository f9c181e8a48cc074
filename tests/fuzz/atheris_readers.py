"""Coverage-guided fuzzing (atheris, libFuzzer) of the framework-free readers (issue #14).

    python tests/fuzz/atheris_readers.py -runs=3000 -seed=1 CORPUS_DIR      # the quick run (CI)
    python tests/fuzz/atheris_readers.py -max_total_time=3600 CORPUS_DIR    # a release run

The plain seeded mutator (fuzz_readers.py) covers every format and the CLI; this harness is the
coverage-guided half for the readers that need no framework: :func:`eca_multi.weights.sources.sniff`
and :func:`eca_multi.port.read_source` on safetensors and ``.npz`` (the header parser, the size
bounds, the bfloat16 path, the metadata check, the digest, the schema, kernel-size and class-count
checks). ``eca_multi`` is instrumented, so libFuzzer keeps the inputs that reach new branches.

One input is one byte of options (bit 0: strict keys, bit 1: kernel sizes from the checkpoint,
bit 2: the ``.npz`` suffix instead of ``.safetensors``) followed by the file. An input fails
(libFuzzer writes it to ``-artifact_prefix``) on an exception outside the documented ones (the
fuzz_readers.py rule), on a framework imported along the way, over ``-timeout`` seconds or over
``-rss_limit_mb`` (60 s and 2048 MB by default, as in fuzz_readers.py). An empty ``CORPUS_DIR``
is seeded with small real files (partial canonical states of ``eca_mobilenet_v2`` in both
containers, float32 and bfloat16, with and without eca-multi's metadata and digest).
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path


def _run_in_a_child() -> None:
    """Run the fuzzer in a forked child and remove its work folder when the child ends.

    libFuzzer ends the process with C ``exit()``, so neither ``atexit`` nor a ``finally`` of
    ours runs after ``atheris.Fuzz()``: the parent owns the folder. The child also starts its
    own peak-RSS count. libFuzzer's ``-rss_limit_mb`` reads the peak RSS (``getrusage``), and
    Linux carries that peak across ``exec`` from the process that spawned us: started by a
    pytest worker holding 4 GB, the fuzzer reported 4 GB before its first input and stopped as
    out-of-memory. The child execs this script again with the same arguments and this process
    passes on its exit status.
    """
    if sys.platform != "linux" or os.environ.get("ECA_ATHERIS_WORK"):
        return
    work = tempfile.mkdtemp(prefix="atheris-readers-")
    pid = os.fork()
    if pid == 0:
        os.environ["ECA_ATHERIS_WORK"] = work
        os.execv(sys.executable, [sys.executable, *sys.argv])
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    _run_in_a_child()

import atheris  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

with atheris.instrument_imports(include=["eca_multi"]):
    from eca_multi.port import read_source
    from eca_multi.weights import save_file
    from eca_multi.weights.sources import sniff

from fuzz_readers import ARCH, _documented  # noqa: E402 (the same rule as the seeded fuzzer)

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax")
_WORK = Path(os.environ.get("ECA_ATHERIS_WORK") or tempfile.mkdtemp(prefix="atheris-readers-"))


def _partial_state(num_classes: int = 10) -> dict:
    """A few canonical tensors of ``ARCH`` (the stem, one ECA kernel, a BatchNorm, the
    classifier): small enough for libFuzzer to mutate, real enough to reach the schema checks."""
    from common import random_canonical_state

    state = random_canonical_state(ARCH, num_classes, 0)
    keep = [k for k in state if k.startswith(("features.0.", "classifier."))]
    keep += [k for k in state if ".eca." in k][:1]
    return {k: state[k] for k in keep}


def _bf16(path: Path, state: dict) -> None:
    """A safetensors file in bfloat16, as timm saves one (the upper halves of float32)."""
    import json

    import numpy as np

    header, blobs, offset = {}, [], 0
    for k, v in state.items():
        raw = (np.ascontiguousarray(v, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        span = [offset, offset + len(raw)]
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": span}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def seed_corpus(folder: Path) -> None:
    """Write the seed inputs (option byte + file) into an empty ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = _partial_state()
    for name, opts, write in [
        ("canonical.safetensors", 0b000, lambda p: save_file(p, state)),
        ("canonical.npz", 0b100, lambda p: save_file(p, state)),
        ("checkpoint-ks.safetensors", 0b011, lambda p: save_file(p, state)),
        ("bf16.safetensors", 0b010, lambda p: _bf16(p, state)),
    ]:
        src = _WORK / name
        write(src)
        (folder / f"seed-{name}").write_bytes(bytes([opts]) + src.read_bytes())
        src.unlink()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    opts, body = data[0], data[1:]
    path = _WORK / ("case.npz" if opts & 0b100 else "case.safetensors")
    path.write_bytes(body)
    try:
        if sniff(path) in ("safetensors", "npz"):  # a framework's container is fuzz_readers.py's
            read_source(path, ARCH, strict=bool(opts & 1),
                        kernel_sizes="checkpoint" if opts & 0b10 else None)  # fmt: skip
    except Exception as e:  # noqa: BLE001 (sorting documented from undocumented is the point)
        if not _documented(e, path):
            raise
    imported = [m for m in FRAMEWORKS if m in sys.modules]
    if imported:
        raise RuntimeError(f"a framework-free reader imported {imported}")


def main(argv: list[str]) -> None:
    folders = [a for a in argv[1:] if not a.startswith("-")]
    for folder in folders:
        if not Path(folder).is_dir() or not any(Path(folder).iterdir()):
            seed_corpus(Path(folder))
    flags = [a for a in argv[1:] if a.startswith("-")]
    defaults = {"-timeout": "60", "-rss_limit_mb": "2048", "-max_len": str(1 << 17)}
    for flag, value in defaults.items():
        if not any(f.startswith(flag + "=") for f in flags):
            argv.append(f"{flag}={value}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
