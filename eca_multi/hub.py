"""Hugging Face Hub sources, framework-free: ``hf-hub:timm/ecaresnet26t.ra2_in1k`` -> local files.

    model = resolve("hf-hub:timm/ecaresnet26t.ra2_in1k")  # reads config.json
    model.arch, model.pretrained_cfg  # "ecaresnet26t", {"input_size": [3, 256, 256], ...}
    path = model.weights()  # model.safetensors (or pytorch_model.bin), from the cache

Files come through ``huggingface_hub``'s own :func:`hf_hub_download`, so its cache and settings
apply unchanged: ``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache is), ``HF_HUB_OFFLINE=1`` (use
the cache only), ``HF_TOKEN`` (gated or private repositories); a file already in the cache is not
downloaded again. The name follows timm's: ``hf-hub:<owner>/<repo>[@<revision>]``.

The architecture is the ``architecture`` field of the repository's ``config.json`` (timm writes it
with :func:`timm.models.push_to_hf_hub`); it must be one of :data:`eca_multi.archs.ARCHS`. The
pretrained config (input size, interpolation, crop, mean / std, classes, label names) is merged
the way timm merges it (``timm.models._hub._parse_model_cfg``): the ``pretrained_cfg`` dict with
the top-level ``num_classes``, ``label_names`` and ``label_descriptions``, plus ``hf_hub_id``.

Weights are read by the usual source readers (:func:`eca_multi.port.read_source`): safetensors
without pickles, ``pytorch_model.bin`` only with ``torch.load(weights_only=True)``.

``huggingface_hub`` is imported only inside the functions that download (``pip install
'eca-multi[hub]'``); this module itself imports the standard library and the core only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from . import archs

__all__ = [
    "CONFIG_FILE",
    "PREFIX",
    "WEIGHT_FILES",
    "HubError",
    "HubFileNotFoundError",
    "HubModel",
    "HubNotFoundError",
    "is_hub_name",
    "parse_name",
    "pretrained_cfg_from_config",
    "resolve",
    "seed_cache",
]

PREFIX = "hf-hub:"
CONFIG_FILE = "config.json"
CONFIG_MAX_BYTES = 1 << 20  # a timm config.json is about 1 KB; a larger one is refused unread
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference (timm's)


class HubError(ValueError):
    """A hub name that cannot be ported: not an ECA model eca-multi knows, or a bad name."""


class HubNotFoundError(HubError):
    """The repository, revision or file is neither reachable on the Hub nor in the local cache."""


class HubFileNotFoundError(HubNotFoundError):
    """The repository (or, offline, its cached snapshot) has no such file."""


def is_hub_name(src: Any) -> bool:
    """True for ``"hf-hub:owner/repo[@revision]"`` (a str, not a path)."""
    return isinstance(src, str) and src.startswith(PREFIX)


def parse_name(name: str) -> tuple[str, str | None]:
    """``"hf-hub:owner/repo@rev"`` -> ``("owner/repo", "rev")`` (revision None when absent).

    Raises:
        HubError: no ``hf-hub:`` prefix, an empty repository or more than one ``@``.
    """
    if not is_hub_name(name):
        raise HubError(f"{name!r} is not a hub name (expected {PREFIX}owner/repo[@revision])")
    repo, *rev = name[len(PREFIX) :].split("@")
    if not repo or len(rev) > 1 or (rev and not rev[0]):
        raise HubError(f"{name!r}: expected {PREFIX}owner/repo[@revision]")
    return repo, (rev[0] if rev else None)


def pretrained_cfg_from_config(
    config: Mapping[str, Any], hub_id: str | None = None
) -> dict[str, Any]:
    """timm's pretrained config from a ``config.json`` dict, merged as timm merges it.

    ``pretrained_cfg`` with the top-level ``num_classes``, ``label_names`` and
    ``label_descriptions`` (legacy single-dict configs: the whole dict minus ``architecture`` /
    ``num_features``, ``labels`` renamed ``label_names``), plus ``hf_hub_id`` when given.
    """
    config = json.loads(json.dumps(config))  # a deep copy in JSON types (tuples -> lists)
    if "pretrained_cfg" in config:
        cfg = dict(config["pretrained_cfg"] or {})
    else:  # legacy: one flat dict
        cfg = {k: v for k, v in config.items() if k not in ("architecture", "num_features")}
        if "labels" in cfg:
            cfg["label_names"] = cfg.pop("labels")
    for key in ("num_classes", "label_names", "label_descriptions"):
        if key in config:
            cfg[key] = config[key]
    if hub_id is not None:
        cfg["hf_hub_id"] = hub_id
    return cfg


@dataclass(frozen=True)
class HubModel:
    """A hub repository resolved to an architecture and its config (weights fetched on demand)."""

    name: str  # "hf-hub:timm/ecaresnet26t.ra2_in1k"
    repo_id: str
    revision: str | None
    arch: str
    arch_from_config: bool  # False: given by the caller (the config has no architecture)
    # config.json as read ({} when the repo has none)
    config: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    pretrained_cfg: dict[str, Any] | None = None

    def weights(self) -> Path:
        """The local weight file: ``model.safetensors``, else ``pytorch_model.bin`` (cached).

        Raises:
            HubNotFoundError: neither file is in the repository (or, offline, in the cache).
        """
        missing: list[HubFileNotFoundError] = []
        for filename in WEIGHT_FILES:
            try:
                return _download(self.name, self.repo_id, filename, self.revision)
            except HubFileNotFoundError as e:
                missing.append(e)
        raise HubNotFoundError(f"{missing[0]} (nor {', '.join(WEIGHT_FILES[1:])})") from missing[0]

    def describe(self) -> dict[str, Any]:
        """What a port records about its hub source (``info["hub"]``)."""
        return {"name": self.name, "repo_id": self.repo_id, "revision": self.revision}


def resolve(name: str, arch: str | None = None) -> HubModel:
    """Read a hub repository's ``config.json`` and check that eca-multi can port it.

    Args:
        name: ``"hf-hub:owner/repo[@revision]"``.
        arch: the architecture; default the config's ``architecture``. When both are known they
            must agree.

    Raises:
        HubError: the config's architecture is none of :data:`eca_multi.archs.ARCHS`, differs
            from ``arch``, or is missing and ``arch`` not given.
        HubNotFoundError: no such repository / revision, or not cached while offline.
        ImportError: ``huggingface_hub`` is not installed.
    """
    repo_id, revision = parse_name(name)
    try:
        config_file: Path | None = _download(name, repo_id, CONFIG_FILE, revision)
    except HubFileNotFoundError:
        if arch is None:
            raise
        config_file = None  # the weights may still be there; the caller named the architecture
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            size = Path(config_file).stat().st_size
            if size <= CONFIG_MAX_BYTES:  # checked before it is read or parsed
                config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise HubError(f"{name}: unreadable {CONFIG_FILE} ({e})") from e
        if size > CONFIG_MAX_BYTES:
            raise HubError(
                f"{name}: {CONFIG_FILE} of {size:,} bytes, over {CONFIG_MAX_BYTES:,} (timm's are "
                "about 1 KB): not a model config"
            )
        if not isinstance(config, dict):
            raise HubError(f"{name}: {CONFIG_FILE} is not a JSON object")
    found = config.get("architecture")
    if found is None and arch is None:
        raise HubError(f"{name}: {CONFIG_FILE} names no architecture; pass --arch (arch=...)")
    if found is not None and found not in archs.ARCHS:
        raise HubError(
            f"{name} is a {found!r} model ({CONFIG_FILE} architecture), not an ECA architecture "
            f"eca-multi knows; known: {', '.join(archs.ARCHS)}"
        )
    if arch is not None:
        archs.get_arch(arch)  # KeyError naming the known ones
        if found is not None and found != arch:
            raise HubError(f"{name} holds a {found!r} model ({CONFIG_FILE}), not {arch!r}")
    hub_id = repo_id if revision is None else f"{repo_id}@{revision}"
    return HubModel(
        name=name,
        repo_id=repo_id,
        revision=revision,
        arch=cast(str, found or arch),  # one of them is set (checked above)
        arch_from_config=found is not None,
        config=config,
        config_file=None if config_file is None else Path(config_file),
        pretrained_cfg=pretrained_cfg_from_config(config, hub_id) if config else None,
    )


# ---------------------------------------------------------------------------------------------
# huggingface_hub, imported here only


def _hf() -> tuple[ModuleType, ModuleType]:
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError as e:
        raise ImportError(
            f"porting from {PREFIX} names needs huggingface_hub: pip install 'eca-multi[hub]' "
            f"(or pip install huggingface_hub) ({e})"
        ) from e
    return huggingface_hub, errors


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _download(name: str, repo_id: str, filename: str, revision: str | None) -> Path:
    """``hf_hub_download`` of one file; every hub failure as one :class:`HubNotFoundError` line
    (the original chained)."""
    from . import __version__

    hf, errors = _hf()
    try:
        return Path(
            hf.hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                library_name="eca-multi",
                library_version=__version__,
            )
        )
    except errors.GatedRepoError as e:
        raise HubNotFoundError(
            f"{name}: gated repository; accept its terms on the Hub and log in (HF_TOKEN) "
            f"({_first_line(e)})"
        ) from e
    except errors.RepositoryNotFoundError as e:
        raise HubNotFoundError(
            f"{name}: no such repository on the Hub (or it is private: set HF_TOKEN)"
        ) from e
    except errors.RevisionNotFoundError as e:
        raise HubNotFoundError(f"{name}: no revision {revision!r} in {repo_id}") from e
    except errors.LocalEntryNotFoundError as e:  # offline or no connection, and not cached
        from huggingface_hub import constants

        why = "offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the Hub is unreachable"
        raise HubFileNotFoundError(
            f"{name}: {filename} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and {why}"
        ) from e
    except errors.EntryNotFoundError as e:  # the repository exists but has no such file
        raise HubFileNotFoundError(f"{name}: the repository has no {filename}") from e
    except errors.HFValidationError as e:
        raise HubError(f"{name}: not a valid repository name ({_first_line(e)})") from e
    except (errors.HfHubHTTPError, OSError) as e:  # other HTTP errors, a full disk, ...
        raise HubNotFoundError(
            f"{name}: cannot get {filename} ({type(e).__name__}: {_first_line(e)})"
        ) from e


def seed_cache(
    cache: str | Path, repo_id: str, files: Mapping[str, bytes], revision: str = "0" * 40
) -> Path:
    """Put a repository's files into a hub cache folder (``HF_HUB_CACHE``) by hand, in
    huggingface_hub's own layout: blobs named by content hash, ``snapshots/<revision>/`` of
    relative links to them, ``refs/main`` naming the revision. With ``HF_HUB_OFFLINE=1`` the
    hub name then resolves from it (machines without network; the tests and examples).

    Returns:
        The snapshot folder.
    """
    import hashlib
    import os

    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
