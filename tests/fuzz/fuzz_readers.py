"""A seeded mutation fuzzer of every weight-file reader and of ``eca-multi port`` (issue #14).

    python tests/fuzz/fuzz_readers.py --cases 300 --seed 0            # the quick run (CI)
    python tests/fuzz/fuzz_readers.py --cases 6000 --seed 1 --json r.json   # the release run

A corpus of real files of every supported format (canonical safetensors and npz, torch zip and
legacy pickle state_dicts, the official ``.pth.tar``, timm's ``model.safetensors`` in bfloat16,
Keras ``.weights.h5`` and ``.keras``, our Flax msgpack, and a pickle that would run code) is
written for a small architecture; each case takes one file, applies 1-4 seeded mutations (bit
flips, byte runs, truncation, insertion, duplication, biased towards the structural first and last
4 KiB, plus format-aware edits of zip directories and safetensors headers) and reads it with
:func:`eca_multi.port.read_source`; every ``--cli-every``-th case also runs ``eca-multi port`` on
it in-process. The cases run in a worker process that the driver watches. A case fails on:

* an exception outside the documented ones (SourceError, WeightMismatchError, WeightDtypeError,
  FileNotFoundError; a plain ValueError only if it names the file);
* an exception escaping the CLI (a traceback) or a CLI exit status other than 0 / 1 / 2;
* a case over ``--case-seconds`` (60) or over ``--case-mb`` (2048) MB more than the worker's
  resident memory before it (the driver kills the worker and goes on with the next case);
* a file left in the CLI's output folder after a failed port (a partial output);
* the marker file that the code-carrying pickle would create (executed code).

Exit status 0 when every case passes; the summary (cases, failures and seconds per format) is
printed and, with ``--json``, written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ARCH = "eca_mobilenet_v2"
CLASSES = 10
FORMATS = ("safetensors", "npz", "torch-zip", "torch-legacy", "official", "timm-bf16",
           "keras-weights", "keras-archive", "flax", "pickle-code")  # fmt: skip
SUFFIX = {"safetensors": ".safetensors", "npz": ".npz", "torch-zip": ".pth",
          "torch-legacy": ".pth", "official": ".pth.tar", "timm-bf16": ".safetensors",
          "keras-weights": ".weights.h5", "keras-archive": ".keras", "flax": ".msgpack",
          "pickle-code": ".pth"}  # fmt: skip
# how often each format is drawn: a Keras or Flax read builds a model (about a second)
WEIGHT = {"keras-weights": 0.3, "keras-archive": 0.3, "flax": 0.5}
TARGETS = ("canonical", "torch", "keras", "flax")
OUT_NAME = {"canonical": "o.safetensors", "torch": "o.pth", "keras": "o.weights.h5",
            "flax": "o.msgpack"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the corpus (written once per run, in the worker)


def _state(seed: int = 0):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/common.py
    from common import random_canonical_state

    return random_canonical_state(ARCH, CLASSES, seed)


def build_corpus(folder: Path, marker: Path) -> dict[str, bytes]:
    import torch

    from eca_multi.port import port
    from eca_multi.weights import save_file

    state = _state()
    src = folder / "src.safetensors"
    save_file(src, state)
    files = {"safetensors": src}
    save_file(folder / "src.npz", state)
    files["npz"] = folder / "src.npz"
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    torch.save(tensors, folder / "zip.pth")
    files["torch-zip"] = folder / "zip.pth"
    torch.save(tensors, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    files["torch-legacy"] = folder / "legacy.pth"
    for fmt, to, name in (("official", "torch", "o.pth.tar"), ("keras-weights", "keras",
                          "o.weights.h5"), ("keras-archive", "keras", "o.keras"),
                          ("flax", "flax", "o.msgpack")):  # fmt: skip
        port(src, ARCH, to, folder / name, progress=False)
        files[fmt] = folder / name
    from safetensors.torch import save_file as torch_save

    bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in tensors.items()}
    torch_save(bf16, str(folder / "model.safetensors"), metadata={"format": "pt"})
    files["timm-bf16"] = folder / "model.safetensors"

    class _Code:  # a pickle that runs a command when unpickled unsafely
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    (folder / "code.pth").write_bytes(pickle.dumps({"features.0.0.weight": _Code()}, 2))
    files["pickle-code"] = folder / "code.pth"
    return {fmt: Path(p).read_bytes() for fmt, p in files.items()}


# ---------------------------------------------------------------------------------------------
# mutations


def _zip_edit(data: bytearray, rng: random.Random) -> None:
    """Edit one field of a zip central-directory entry (method, flags, sizes, name length)."""
    starts: list[int] = []  # the first 64 entries (bytearray.find: a Python loop is ~1 s / MB)
    i = data.find(b"PK\x01\x02")
    while 0 <= i < len(data) - 46 and len(starts) < 64:
        starts.append(i)
        i = data.find(b"PK\x01\x02", i + 1)
    if not starts:
        return
    i = rng.choice(starts)
    off, fmt, values = rng.choice([
        (10, "<H", (99, 12, 14, 0xFFFF)),  # compression method
        (8, "<H", (0x1, 0x41, 0x800)),  # flags: encrypted, strong encryption, UTF-8
        (20, "<I", (0, 1, 0xFFFFFFFF)),  # compressed size
        (24, "<I", (0, 1 << 31, 0xFFFFFFFF)),  # uncompressed size
        (28, "<H", (0, 1, 0xFFFF)),  # file name length
    ])  # fmt: skip
    struct.pack_into(fmt, data, i + off, rng.choice(values))


def _safetensors_edit(data: bytearray, rng: random.Random) -> bytearray:
    """Change one number or dtype in a safetensors header (keeps its length field honest)."""
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        return data
    header = data[8 : 8 + n].decode("utf-8", "replace")
    choice = rng.random()
    if choice < 0.3:
        new = rng.choice(['"I32"', '"BF16"', '"F8_E4M3"', '"C64"', '"BOOL"'])
        header = header.replace('"F32"', new, 1)
    else:
        digits = [i for i, c in enumerate(header) if c.isdigit()]
        if digits:
            i = rng.choice(digits)
            number = rng.choice(["0", "9", "99999999999", "-1", "1e9"])
            header = header[:i] + number + header[i + 1 :]
    raw = header.encode()
    return bytearray(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def mutate(data: bytes, fmt: str, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        size = len(buf)
        if size == 0:
            break
        # half the edits hit the structural ends of the file (headers, zip directories)
        edge = min(size, 4096)
        if rng.random() < 0.5:
            pos = rng.randrange(edge) if rng.random() < 0.5 else size - 1 - rng.randrange(edge)
        else:
            pos = rng.randrange(size)
        if op < 0.35:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            run = rng.randint(1, 64)
            buf[pos : pos + run] = bytes([rng.choice((0, 0xFF, rng.randrange(256)))]) * run
        elif op < 0.62:
            del buf[pos:]
        elif op < 0.7:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif op < 0.75:
            a = rng.randrange(size)
            buf[pos:pos] = buf[a : a + rng.randint(1, 256)]
        elif buf[:2] == b"PK":
            _zip_edit(buf, rng)
        elif fmt in ("safetensors", "timm-bf16"):
            buf = _safetensors_edit(buf, rng)
        else:
            buf[pos] = rng.randrange(256)
    return bytes(buf)


# ---------------------------------------------------------------------------------------------
# the worker: runs cases, appends one JSON line per case to the results file


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _documented(e: BaseException, path: Path) -> bool:
    from eca_multi.weights import WeightDtypeError, WeightMismatchError
    from eca_multi.weights.sources import SourceError

    if isinstance(e, (SourceError, WeightMismatchError, WeightDtypeError, FileNotFoundError)):
        return True
    return type(e) is ValueError and (str(path) in str(e) or path.name in str(e))


def run_case(case: dict, corpus: dict[str, bytes], work: Path, marker: Path) -> dict:
    from eca_multi.cli import main as cli_main
    from eca_multi.port import read_source

    rng = random.Random(case["seed"])
    fmt = case["format"]
    path = work / f"case{SUFFIX[fmt]}"
    path.write_bytes(mutate(corpus[fmt], fmt, rng))
    rec: dict = {"case": case["i"], "format": fmt, "ok": True, "outcome": "read"}
    t0 = time.perf_counter()
    try:
        read_source(path, ARCH, kernel_sizes="checkpoint")
    except Exception as e:  # noqa: BLE001 (sorting documented from undocumented is the point)
        rec["outcome"] = type(e).__name__
        if not _documented(e, path):
            rec.update(ok=False, why=f"undocumented {type(e).__name__}: {str(e)[:300]}",
                       traceback=traceback.format_exc(limit=12))  # fmt: skip
    if case.get("cli") and rec["ok"]:
        out_dir = work / "out"
        out_dir.mkdir(exist_ok=True)
        to = TARGETS[case["seed"] % len(TARGETS)]
        args = ["port", str(path), "--arch", ARCH, "--to", to, "-o",
                str(out_dir / OUT_NAME[to]), "--quiet", "--force"]  # fmt: skip
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                rc = cli_main(args)
        except BaseException as e:  # noqa: BLE001 (an exception out of main is a traceback)
            rec.update(ok=False, why=f"the CLI raised {type(e).__name__}: {str(e)[:300]}",
                       traceback=traceback.format_exc(limit=12))  # fmt: skip
            rc = None
        text = stdout.getvalue() + stderr.getvalue()
        if rc is not None and (rc not in (0, 1, 2) or "Traceback" in text):
            rec.update(ok=False, why=f"CLI exit {rc}: {text[-500:]}")
        left = sorted(p.name for p in out_dir.iterdir())
        if rc == 2 and left:
            rec.update(ok=False, why=f"a failed port left {left}")
        rec["cli"] = rc
        for p in out_dir.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    if marker.exists():
        rec.update(ok=False, why="the code in a pickle ran (marker file created)")
        marker.unlink()
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def worker(cases_file: Path, results: Path, progress: Path, work: Path) -> int:
    try:  # torch (and triton, through torch._dynamo) before TensorFlow: the other order segfaults
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass
    marker = work / "EXECUTED"
    corpus_dir = work / "corpus"
    saved = corpus_dir / "corpus.json"
    if saved.exists():  # a restarted worker (after a killed case) reuses the corpus
        names = json.loads(saved.read_text())
        corpus = {fmt: (corpus_dir / name).read_bytes() for fmt, name in names.items()}
    else:
        corpus_dir.mkdir(exist_ok=True)
        corpus = build_corpus(corpus_dir, marker)
        for fmt, data in corpus.items():
            (corpus_dir / f"seed-{fmt}").write_bytes(data)
        saved.write_text(json.dumps({fmt: f"seed-{fmt}" for fmt in corpus}))
    done = set()
    if results.exists():
        done = {json.loads(line)["case"] for line in results.read_text().splitlines() if line}
    cases = [c for c in json.loads(cases_file.read_text()) if c["i"] not in done]
    with open(results, "a") as out:
        for case in cases:
            progress.write_text(json.dumps({"case": case["i"], "t": time.time(),
                                            "rss": _rss_mb()}))  # fmt: skip
            rec = run_case(case, corpus, work, marker)
            out.write(json.dumps(rec) + "\n")
            out.flush()
    progress.write_text(json.dumps({"case": None}))
    return 0


# ---------------------------------------------------------------------------------------------
# the driver


def _child_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def drive(a: argparse.Namespace) -> dict:
    rng = random.Random(a.seed)
    formats = a.formats.split(",") if a.formats else list(FORMATS)
    weights = [WEIGHT.get(f, 1.0) for f in formats]
    cases = [{"i": i, "format": rng.choices(formats, weights)[0], "seed": rng.getrandbits(48),
              "cli": a.cli_every > 0 and i % a.cli_every == 0} for i in range(a.cases)]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="eca-fuzz-"))
    try:
        summary = _drive_in(a, cases, work)
    except BaseException:
        print(f"fuzz: the work folder is kept for inspection: {work}", file=sys.stderr)
        raise
    if summary["failures"] or a.keep_work:
        print(f"fuzz: the work folder (cases, inputs, worker log) is kept: {work}")
        summary["work"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _drive_in(a: argparse.Namespace, cases: list[dict], work: Path) -> dict:
    cases_file, results, progress = work / "cases.json", work / "results.jsonl", work / "progress"
    cases_file.write_text(json.dumps(cases))
    killed: list[dict] = []
    t_start = time.perf_counter()
    while True:
        progress.write_text(json.dumps({"case": -1, "t": time.time(), "rss": 0}))
        cmd = [sys.executable, __file__, "--worker", str(cases_file), str(results), str(progress),
               str(work)]  # fmt: skip
        log = open(work / "worker.log", "a")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        base_rss = None
        while proc.poll() is None:
            time.sleep(0.2)
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                continue
            if state.get("case") is None or state["case"] < 0:
                continue
            if base_rss is None or state.get("rss"):
                base_rss = state.get("rss") or base_rss
            over_time = time.time() - state["t"] > a.case_seconds
            over_mem = _child_rss_mb(proc.pid) - (base_rss or 0) > a.case_mb
            if over_time or over_mem:
                proc.kill()
                proc.wait()
                case = next(c for c in cases if c["i"] == state["case"])
                why = f"over {a.case_seconds} s" if over_time else f"over {a.case_mb} MB"
                rec = {"case": case["i"], "format": case["format"], "ok": False, "why": why,
                       "seconds": round(time.time() - state["t"], 1)}  # fmt: skip
                killed.append(rec)
                with open(results, "a") as out:
                    out.write(json.dumps(rec) + "\n")
        log.close()
        done = {json.loads(line)["case"] for line in results.read_text().splitlines() if line}
        if len(done) >= len(cases):
            break
        if proc.returncode not in (0, -9):  # the worker crashed outside a case
            tail = (work / "worker.log").read_text()[-3000:]
            raise SystemExit(f"the fuzz worker exited {proc.returncode}:\n{tail}")
    recs = [json.loads(line) for line in results.read_text().splitlines() if line]
    summary: dict = {"cases": len(recs), "seconds": round(time.perf_counter() - t_start, 1),
                     "seed": a.seed, "per_format": {}, "failures": []}  # fmt: skip
    for r in recs:
        empty = {"cases": 0, "failed": 0, "seconds": 0.0, "outcomes": {}}
        f = summary["per_format"].setdefault(r["format"], empty)
        f["cases"] += 1
        f["failed"] += not r["ok"]
        f["seconds"] = round(f["seconds"] + r.get("seconds", 0.0), 2)
        outcome = r.get("outcome", "killed")
        f["outcomes"][outcome] = f["outcomes"].get(outcome, 0) + 1
        if not r["ok"]:
            summary["failures"].append(r)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", default=None, help=f"comma-separated, of {', '.join(FORMATS)}")
    p.add_argument("--cli-every", type=int, default=4, help="run the CLI on every n-th case")
    p.add_argument("--case-seconds", type=float, default=60)
    p.add_argument("--case-mb", type=float, default=2048)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep-work", action="store_true",
                   help="keep the work folder (kept anyway when a case fails)")  # fmt: skip
    p.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(*map(Path, a.worker))
    summary = drive(a)
    print(f"fuzz: {summary['cases']} cases in {summary['seconds']} s (seed {summary['seed']})")
    for fmt, f in summary["per_format"].items():
        print(f"  {fmt:14} {f['cases']:5} cases {f['failed']:3} failed {f['seconds']:8.1f} s  "
              f"{f['outcomes']}")  # fmt: skip
    for r in summary["failures"][:20]:
        print(f"FAILED case {r['case']} ({r['format']}): {r['why']}")
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
