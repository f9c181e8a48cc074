"""Make, store and verify the conformance goldens; only the NumPy reference writes them.

Each ECA case gets ``goldens/<case id>.npz`` holding float64 arrays x, w, g (inputs, exactly
representable in the case's dtype; w in float32, canonical layout (1, 1, k)) and y, dx, dw (the
reference's outputs). A case of another family member (SE, SE-Var1/2/3, SE-GC, ECA-NS) holds x, g,
y, dx and, per canonical weight name, ``p.<name>`` (input, float32 values) and ``d.<name>`` (its
gradient); :func:`golden_params` / :func:`golden_grads` read either form.
Files are written byte-deterministically (fixed zip timestamps), and
``goldens/MANIFEST.json`` records the sha256 of each.

    python -m eca_multi.conformance.generate           # regenerate (refuses to change files
                                                       # unless --force)
    python -m eca_multi.conformance.generate --check   # verify the manifest and that goldens
                                                       # are current
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import reference
from ..family import attention_config, attention_schema, init_bounds
from ..weights.io import atomic_write_bytes
from .cases import CASES, Case, get_case

__all__ = [
    "GOLDENS_DIR",
    "check_goldens",
    "golden_grads",
    "golden_params",
    "load_golden",
    "make_golden",
    "round_to_dtype",
]

GOLDENS_DIR = Path(__file__).parent / "goldens"
MANIFEST = "MANIFEST.json"
ARRAYS = ("x", "w", "g", "y", "dx", "dw")
INPUTS = ("x", "w", "g")


def round_to_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to the nearest ``dtype`` value (ties to even); returned as float64."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == "float32":
        return a.astype(np.float32).astype(np.float64)
    if dtype == "float16":
        return a.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":  # bf16 = the top 16 bits of a float32; round to nearest even
        bits: np.ndarray = a.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    raise ValueError(f"unknown dtype {dtype!r}")


def _seed(case: Case) -> int:
    return int.from_bytes(hashlib.sha256(case.id.encode()).digest()[:4], "little")


def _asymmetric_kernel(rng: np.random.Generator, k: int) -> np.ndarray:
    """Random kernel in (-1, 1), far from its own flip (a flipped kernel must fail the suite)."""
    while True:
        w = rng.uniform(-1.0, 1.0, size=k)
        if k == 1 or np.abs(w - w[::-1]).max() > 0.3:
            return w


def _saturating(rng: np.random.Generator, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Inputs whose gate is flat in every channel (no backend is ill-conditioned there).

    Each (n, c) slice is ``A * (+-1) + N(0, 1)`` (A = x_scale) and the kernel has a dominant
    centre tap (|w_centre| >= 0.8, sum of the other |w| < 0.6, still asymmetric), hence
    ``|z| >= 0.2 * A`` everywhere: sigmoid is 0 or 1 to float32 precision, hard_sigmoid exactly.
    """
    k, c = case.k, case.channels
    while True:
        w = rng.uniform(-0.3, 0.3, size=k)
        w[k // 2] = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.0)
        side = np.abs(np.delete(w, k // 2)).sum()
        if side < 0.6 and (k == 1 or np.abs(w - w[::-1]).max() > 0.3):
            break
    sign_shape = [case.shape[0]] + [1] * (len(case.shape) - 1)
    sign_shape[1 if case.data_format == "channels_first" else -1] = c
    signs = rng.choice([-1.0, 1.0], size=sign_shape)
    x = case.x_scale * signs + rng.standard_normal(case.shape)
    return x, w


def _family_params(rng: np.random.Generator, case: Case) -> dict[str, np.ndarray]:
    """Seeded weights of a family member: U(-2b, 2b) with b its init bound (z is O(1))."""
    cfg = attention_config(case.attention, **case.attention_kwargs())
    bounds = init_bounds(cfg)
    params = {}
    for name, (shape, _) in attention_schema(cfg).items():
        if case.attention == "eca_ns":  # each channel's taps asymmetric: a flip must fail
            rows = [_asymmetric_kernel(rng, shape[1]) for _ in range(shape[0])]
            w = np.stack(rows) if rows else np.zeros(shape)
        else:
            w = rng.uniform(-2 * bounds[name], 2 * bounds[name], size=shape)
        params[name] = round_to_dtype(w, "float32")
    return params


def _make_family_golden(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = round_to_dtype(rng.standard_normal(case.shape) * case.x_scale, case.dtype)
    params = _family_params(rng, case)
    g = round_to_dtype(rng.standard_normal(case.shape), case.dtype)
    kw = case.attention_kwargs()
    y = reference.attention_forward(x, params, case.attention, **kw)
    dx, dp = reference.attention_backward(x, params, g, case.attention, **kw)
    out = {"x": x, "g": g, "y": y, "dx": dx}
    out.update({f"p.{n}": v for n, v in params.items()})
    out.update({f"d.{n}": v for n, v in dp.items()})
    return out


def golden_params(golden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{canonical name: float32 weight} of a golden (ECA's ``w`` is ``conv.weight``)."""
    if "w" in golden:
        return {"conv.weight": golden["w"].astype(np.float32)}
    return {k[2:]: v.astype(np.float32) for k, v in golden.items() if k.startswith("p.")}


def golden_grads(golden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{canonical name: float64 reference gradient} of a golden."""
    if "dw" in golden:
        return {"conv.weight": golden["dw"]}
    return {k[2:]: v for k, v in golden.items() if k.startswith("d.")}


def _array_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """File order: ECA's fixed ARRAYS, else x, g, y, dx, then p.* and d.* sorted."""
    if "w" in arrays:
        return list(ARRAYS)
    return ["x", "g", "y", "dx"] + sorted(k for k in arrays if k[:2] in ("p.", "d."))


def make_golden(case: Case) -> dict[str, np.ndarray]:
    """Inputs drawn from the case's seed, outputs from the float64 reference."""
    rng = np.random.default_rng(_seed(case))
    if case.attention != "eca":
        return _make_family_golden(case, rng)
    if case.saturate:
        x, w = _saturating(rng, case)
    else:
        x = rng.standard_normal(case.shape) * case.x_scale
        w = _asymmetric_kernel(rng, case.k)
    x = round_to_dtype(x, case.dtype)
    w = round_to_dtype(w, "float32").reshape(1, 1, case.k)
    g = round_to_dtype(rng.standard_normal(case.shape), case.dtype)
    kw: dict[str, Any] = dict(
        padding=case.padding, gate=case.gate, data_format=case.data_format, channels=case.channels
    )
    y = reference.forward(x, w, **kw)
    dx, dw = reference.backward(x, w, g, **kw)
    return {"x": x, "w": w, "g": g, "y": y, "dx": dx, "dw": dw}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A .npz (readable by np.load) with fixed timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in _array_names(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            arr = io.BytesIO()
            np.lib.format.write_array(
                arr, np.ascontiguousarray(arrays[name], dtype=np.float64), allow_pickle=False
            )
            zf.writestr(info, arr.getvalue())
    return buf.getvalue()


def load_golden(case_id: str, goldens_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The committed golden arrays of one case (float64), loaded without unpickling."""
    path = Path(goldens_dir or GOLDENS_DIR) / f"{case_id}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"no golden for case {case_id!r} at {path}; "
            "run python -m eca_multi.conformance.generate"
        )
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_goldens(goldens_dir: Path = GOLDENS_DIR, *, force: bool = False) -> list[str]:
    """(Re)write every golden and the manifest; returns the ids whose bytes changed."""
    goldens_dir.mkdir(parents=True, exist_ok=True)
    changed, manifest = [], {}
    for case in CASES:
        data = _npz_bytes(make_golden(case))
        path = goldens_dir / f"{case.id}.npz"
        if not path.exists() or path.read_bytes() != data:
            if path.exists() and not force:
                raise FileExistsError(f"golden {path} would change; pass --force to rewrite it")
            atomic_write_bytes(path, data, overwrite=True)
            changed.append(case.id)
        manifest[case.id] = {
            "file": path.name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "case": case.to_dict(),
        }
    for stale in set(p.stem for p in goldens_dir.glob("*.npz")) - set(manifest):
        (goldens_dir / f"{stale}.npz").unlink()
        changed.append(stale)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write_bytes(goldens_dir / MANIFEST, text.encode(), overwrite=True)
    return changed


def check_goldens(goldens_dir: str | Path | None = None, *, regenerate: bool = True) -> list[str]:
    """Problems with the goldens (empty list = all good).

    Checks that the manifest lists exactly the case table, that each file's sha256 matches, that
    the recorded case parameters are the table's, and (``regenerate``) that the reference today
    gives the same inputs bit for bit and the same outputs to 1e-12 relative.
    """
    goldens_dir = Path(goldens_dir or GOLDENS_DIR)
    problems: list[str] = []
    mpath = goldens_dir / MANIFEST
    if not mpath.is_file():
        return [f"no manifest at {mpath}"]
    manifest = json.loads(mpath.read_text())
    want = {c.id for c in CASES}
    for missing in sorted(want - set(manifest)):
        problems.append(f"{missing}: in the case table but not in the manifest")
    for extra in sorted(set(manifest) - want):
        problems.append(f"{extra}: in the manifest but not in the case table")
    for case_id in sorted(want & set(manifest)):
        entry, path = manifest[case_id], goldens_dir / manifest[case_id]["file"]
        if not path.is_file():
            problems.append(f"{case_id}: file {path.name} missing")
            continue
        if _sha256(path) != entry["sha256"]:
            problems.append(f"{case_id}: sha256 of {path.name} differs from the manifest")
        case = get_case(case_id)
        if json.loads(json.dumps(case.to_dict())) != entry["case"]:
            problems.append(f"{case_id}: manifest records other case parameters than the table")
        if not regenerate:
            continue
        stored, fresh = load_golden(case_id, goldens_dir), make_golden(case)
        if sorted(stored) != sorted(fresh):
            problems.append(f"{case_id}: arrays {sorted(stored)} != regenerated {sorted(fresh)}")
            continue
        for name in _array_names(fresh):
            a, b = stored[name], fresh[name]
            if a.shape != b.shape:
                problems.append(f"{case_id}/{name}: shape {a.shape} != regenerated {b.shape}")
            elif (name in INPUTS or name.startswith("p.")) and not np.array_equal(a, b):
                problems.append(f"{case_id}/{name}: input differs from the seeded regeneration")
            # float64 rounding relative to the tensor's scale: BLAS kernels differ per CPU in
            # summation order, which moves an element that cancels to ~0 by ulps of the largest
            # (se_c64 d.fc2.weight: 4.4e-16 on one machine); a real change is many orders larger
            elif not np.allclose(
                a, b, rtol=1e-12, atol=1e-12 * float(np.abs(a).max(initial=0.0)), equal_nan=True
            ):
                d = float(np.abs(a - b).max())
                problems.append(f"{case_id}/{name}: reference output changed (max abs {d:.2e})")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m eca_multi.conformance.generate", description=__doc__.splitlines()[0]
    )
    p.add_argument("--check", action="store_true", help="verify instead of writing")
    p.add_argument("--force", action="store_true", help="rewrite goldens whose bytes change")
    p.add_argument("--dir", type=Path, default=GOLDENS_DIR, help="goldens folder")
    a = p.parse_args(argv)
    if a.check:
        problems = check_goldens(a.dir)
        for line in problems:
            print(line)
        print(f"goldens: {len(CASES)} cases, {len(problems)} problems")
        return 1 if problems else 0
    changed = write_goldens(a.dir, force=a.force)
    print(f"goldens: {len(CASES)} cases written to {a.dir}, {len(changed)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
