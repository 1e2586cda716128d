"""On-disk cache of stage outputs, keyed by a hash of everything that determines them.

Recipes share prefixes (every recipe starts base -> SFT), so each stage's trained model is saved
once under `$MINIMOPD_CACHE/<stage>-<hash>/` and reused. The key holds the stage's config, its
inputs' keys (so changing the base invalidates everything after it) and `CACHE_VERSION` (bump it
when training code changes meaning). An artifact is written to a temporary directory and
renamed into place, and the SHA-256 of every file it holds (weights, config, tokenizer) and of
its record (`minimopd.json`: history and info) is checked on every load: a corrupt, half-written
or hand-edited artifact is reported and rebuilt, never silently used. The cache directory is
checked for write access before anything is trained (`ensure_writable`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

from . import progress
from .models import CheckpointError, load_model, save_model
from .tasks.base import WORLD_VERSION

CACHE_VERSION = 2
CACHE_ENV = "MINIMOPD_CACHE"
# Starting checkpoints shipped inside the package (`minimopd ship` writes them): a stage whose key
# is found there is copied into the cache instead of being trained. `use_shipped(False)` (or
# `minimopd lineage --from-scratch`, or MINIMOPD_SHIPPED=0) trains everything from scratch.
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
SHIPPED_ENV = "MINIMOPD_SHIPPED"
_use_shipped = True


def use_shipped(flag: bool) -> None:
    """Whether stages may start from the checkpoints shipped with the package."""
    global _use_shipped
    _use_shipped = bool(flag)


def shipped_in_use() -> bool:
    """Whether stages start from the shipped checkpoints now (`use_shipped`, `$MINIMOPD_SHIPPED`)."""
    return _use_shipped and os.environ.get(SHIPPED_ENV, "1") != "0"


def shipped_path(key: str) -> Path | None:
    """The shipped artifact for `key`, if there is one and shipped checkpoints are in use."""
    if not shipped_in_use():
        return None
    path = SHIPPED_DIR / key
    return path if (path / "minimopd.json").exists() else None


def cache_root() -> Path:
    """`$MINIMOPD_CACHE`, else `~/.cache/minimopd`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "minimopd")


def _jsonable(obj):
    if hasattr(obj, "cache_dict"):          # a config that says which of its settings key a stage
        return _jsonable(obj.cache_dict())
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def stage_key(stage: str, **parts) -> str:
    """A short stable hash of a stage name and its (JSON-able) inputs."""
    blob = json.dumps({"stage": stage, "v": CACHE_VERSION, "world": WORLD_VERSION, **_jsonable(parts)},
                      sort_keys=True)
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_checksums(path: Path) -> dict[str, str]:
    """SHA-256 of every file of an artifact but its record (minimopd.json), by file name."""
    return {p.name: _sha256(p) for p in sorted(path.iterdir()) if p.is_file() and p.name != "minimopd.json"}


def _weights(files: dict[str, str]) -> dict[str, str]:
    """The weights files' (safetensors) entries of `_file_checksums`."""
    return {name: digest for name, digest in files.items() if name.endswith(".safetensors")}


def _record_checksum(meta: dict) -> str:
    """SHA-256 of an artifact's record without its own checksum field."""
    body = {k: v for k, v in meta.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal(meta: dict, path: Path) -> dict:
    """`meta` with the checksums `load_artifact` verifies: weights, every file, the record."""
    files = _file_checksums(path)
    meta = {**meta, "weights_sha256": _weights(files), "files_sha256": files}
    meta = json.loads(json.dumps(meta))      # hash what a load will read back (str keys, lists)
    return {**meta, "record_sha256": _record_checksum(meta)}


class CacheError(ValueError):
    """The stage cache cannot be used (e.g. it is not writable)."""


def ensure_writable(root: Path | None = None) -> Path:
    """Create the cache directory and check that a file can be written there; raise `CacheError`
    naming the directory and the fix if not (before training, not after the first stage)."""
    root = Path(root or cache_root())
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CacheError(f"the stage cache {root} is not writable ({exc.strerror or exc}); point "
                         f"{CACHE_ENV} at a writable directory, e.g. {CACHE_ENV}=/tmp/minimopd-cache") from None
    return root


@dataclasses.dataclass
class Artifact:
    """A cached (or freshly trained) stage output."""
    model: object
    tokenizer: object
    history: list[dict]
    info: dict
    path: Path
    cached: bool


def load_artifact(path: Path, device: str = "cpu") -> Artifact:
    """Load and verify a cached stage; raises CheckpointError if anything is off."""
    meta_file = path / "minimopd.json"
    if not meta_file.exists():
        raise CheckpointError(f"{path} has no minimopd.json: it was never finished")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_file} is not valid JSON: {exc}") from exc
    recorded = meta.get("weights_sha256")
    files = _file_checksums(path)           # every file read once
    if not isinstance(recorded, dict) or not recorded or _weights(files) != recorded:
        raise CheckpointError(f"the weights in {path} are missing or do not match their recorded checksum")
    if "files_sha256" in meta:   # artifacts written before the full seal have weights checks only
        edited = sorted(n for n in set(files) | set(meta["files_sha256"])
                        if files.get(n) != meta["files_sha256"].get(n))
        if edited:
            raise CheckpointError(f"{', '.join(edited)} in {path} changed after the stage was saved")
        if meta.get("record_sha256") != _record_checksum(meta):
            raise CheckpointError(f"{meta_file} (the stage's history and info) changed after it was saved")
    if meta.get("key", path.name) != path.name:
        raise CheckpointError(f"{path} holds the stage {meta.get('key')!r}, not {path.name!r}")
    model, tok = load_model(path, device=device)
    model.eval()
    return Artifact(model, tok, meta.get("history", []), meta.get("info", {}), path, cached=True)


def _publish(path: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary sibling of `path` with `write(tmp)`, then move it into place, so a
    crash never leaves a half-written artifact under the key."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def cached_stage(key: str, build: Callable[[], tuple], *, device: str = "cpu",
                 refresh: bool = False) -> Artifact:
    """Return the artifact stored under `key`, or run `build() -> (model, tokenizer, StageResult)`,
    save it, and return it. `refresh=True` retrains even when a valid artifact exists."""
    path = cache_root() / key
    with progress.stage(key) as done:
        if path.exists() and not refresh:
            try:
                art = load_artifact(path, device)
                done("loaded from the cache")
                return art
            except CheckpointError as exc:
                warnings.warn(f"cached artifact {path} is unusable ({exc}); rebuilding it", stacklevel=2)
        ensure_writable(path.parent)
        shipped = None if refresh else shipped_path(key)
        if shipped is not None:
            try:
                _publish(path, lambda tmp: shutil.copytree(shipped, tmp))
                art = load_artifact(path, device)            # checksums verified here, once
                art.info = {**art.info, "shipped": True}
                done("copied from the checkpoints shipped with the package")
                return art
            except (CheckpointError, OSError) as exc:
                warnings.warn(f"the shipped checkpoint {shipped} is unusable ({exc}); training the stage instead",
                              stacklevel=2)
        model, tokenizer, result = build()

        def write(tmp: Path) -> None:
            save_model(model, tokenizer, tmp)
            meta = seal({"key": key, "history": result.history, "info": _jsonable(result.info)}, tmp)
            (tmp / "minimopd.json").write_text(json.dumps(meta))
        _publish(path, write)
        done("trained")
        return Artifact(model, tokenizer, result.history, result.info, path, cached=False)
