"""Training checkpoints (resumable, checksummed) and shipped weights (deterministic bytes, preflighted).

Training checkpoint `ckpt_000500.pt` + manifest `ckpt_000500.pt.sha256` ("<hex>  ckpt_000500.pt\\n"):
a torch.save dict {"format", "step", "model", "optimizer", "rng", "train_config", "model_config"}.
Both files are written atomically (temp file, fsync, os.replace, fsync of the folder), checkpoint first:
the manifest is the commit point, so a checkpoint without one is an interrupted write and is ignored.

Shipped weights `segmenter.pt`: safetensors layout written by hand so the bytes depend only on the tensors
and the config (torch.save embeds the file name and torch version, so it is not byte-stable):
    u64 little-endian N | N bytes of JSON header (sorted keys, space padded to 8) | raw tensors, sorted by name
with the model config in header["__metadata__"]["config"]. Sidecar `segmenter.pt.json` holds
{"sha256", "config", "n_classes", "format", "n_params"}. The model version is the sha256 of the weights bytes.
"""
import dataclasses
import hashlib
import io
import json
import logging
import random
import struct
from pathlib import Path

import numpy as np
import torch

from contracts.files import atomic_write, sha256
from digitiser.model import Segmenter, SegmenterConfig

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "digitiser-segmenter-weights/1"
CHECKPOINT_FORMAT = 1
N_CLASSES = 3
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.float64: "F64", torch.int64: "I64"}
_NP_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


class CheckpointError(Exception):
    """A checkpoint or weights file is missing, corrupt, or does not describe a usable segmenter."""


# ----------------------------------------------------------------------------- files

def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- training checkpoints

def checkpoint_path(run_dir, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{step:06d}.pt"


def _manifest_path(path) -> Path:
    return Path(str(path) + ".sha256")


def capture_rng() -> dict:
    """Python, numpy and torch global RNG states as plain types (loadable with weights_only=True)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, key.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state()}


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def save_training_checkpoint(path, state: dict) -> str:
    """Write a training checkpoint and its sha256 manifest atomically. Returns the sha256 hex digest."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    data = buf.getvalue()
    sha = sha256(data)
    path = Path(path)
    atomic_write(path, data)
    atomic_write(_manifest_path(path), f"{sha}  {path.name}\n".encode())
    return sha


def load_training_checkpoint(path) -> dict:
    """Read a training checkpoint after verifying it against its manifest; raises CheckpointError."""
    path, manifest = Path(path), _manifest_path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not manifest.exists():
        raise CheckpointError(f"checkpoint {path} has no manifest {manifest.name}: its write was interrupted; "
                              f"delete it and resume from an earlier checkpoint")
    expected = manifest.read_text().split()[0]
    data = path.read_bytes()
    actual = sha256(data)
    if actual != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt: sha256 {actual} but {manifest.name} expects "
                              f"{expected}; delete both files and resume from an earlier checkpoint")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} passed its checksum but torch cannot read it: {e}") from e
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state.get('format')!r}, "
                              f"this code reads {CHECKPOINT_FORMAT}")
    return state


def list_checkpoints(run_dir) -> list[Path]:
    """Committed checkpoints (those with a manifest) in `run_dir`, oldest first."""
    found = [Path(str(m)[: -len(".sha256")]) for m in Path(run_dir).glob("ckpt_*.pt.sha256")]
    return sorted(p for p in found if p.exists())


def prune_checkpoints(run_dir, keep: int) -> None:
    """Delete all but the newest `keep` committed checkpoints (manifest first, so none is half-deleted)."""
    for path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _manifest_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- shipped weights

def _config_dict(config) -> dict:
    """The config as written: fields added later (``mirror_average``, ``context``, ``precision``) only when not
    their default, so weights without them keep the bytes, and the model version, they had before those existed."""
    d = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    later = {"mirror_average": False, "context": 0, "precision": "float32"}
    return {k: v for k, v in d.items() if not (k in later and v == later[k])}


def weights_bytes(model: torch.nn.Module, config) -> bytes:
    """Serialise the state dict + model config deterministically (same tensors -> same bytes)."""
    header, chunks, offset = {}, [], 0
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        assert t.dtype in _DTYPES, f"tensor {name} has unsupported dtype {t.dtype}"
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    config_json = json.dumps(_config_dict(config), sort_keys=True)
    header["__metadata__"] = {"format": WEIGHTS_FORMAT, "config": config_json}
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def save_weights(model: torch.nn.Module, config, path) -> str:
    """Write shipped weights to `path` and the JSON sidecar to `<path>.json`. Returns the model version
    (sha256 hex of the weights bytes)."""
    data = weights_bytes(model, config)
    sha = sha256(data)
    cfg = _config_dict(config)
    sidecar = {"sha256": sha, "config": cfg, "n_classes": cfg["n_classes"], "format": WEIGHTS_FORMAT,
               "n_params": sum(p.numel() for p in model.parameters())}
    atomic_write(path, data)
    atomic_write(str(path) + ".json", (json.dumps(sidecar, sort_keys=True, indent=2) + "\n").encode())
    log.info("wrote weights %s (model version %s)", path, sha[:12])
    return sha


def read_weights(data: bytes) -> tuple[dict, dict]:
    """Parse weights bytes -> (state dict of CPU tensors, model config dict). Raises ValueError."""
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8: 8 + n])
    meta = header.pop("__metadata__")
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
    body = data[8 + n:]
    state = {}
    for name, spec in header.items():
        b, e = spec["data_offsets"]
        arr = np.frombuffer(body[b:e], dtype=np.dtype(_NP_DTYPES[spec["dtype"]]).newbyteorder("<"))
        state[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="))).reshape(spec["shape"])
    return state, json.loads(meta["config"])


def _fail(path, what: str, todo: str):
    raise CheckpointError(f"segmenter weights {path}: {what}; {todo}")


def load_segmenter(path, device="cpu") -> tuple[Segmenter, str]:
    """Load shipped weights after a preflight. Returns (model in eval mode on `device`, model version =
    sha256 hex of the weights file). Raises CheckpointError saying what failed and what to do."""
    path = Path(path)
    retrain = "re-export with `digitise train --resume --out RUN --export PATH`"
    if not path.exists():
        _fail(path, "file not found", f"pass --weights or {retrain}")
    sidecar_path = Path(str(path) + ".json")
    if not sidecar_path.exists():
        _fail(path, f"sidecar {sidecar_path.name} not found", f"ship it next to the weights or {retrain}")
    try:
        sidecar = json.loads(sidecar_path.read_text())
        expected, sidecar_cfg, n_classes = sidecar["sha256"], sidecar["config"], sidecar["n_classes"]
    except (ValueError, KeyError) as e:
        _fail(path, f"sidecar {sidecar_path.name} is unreadable ({e!r})", retrain)
    data = path.read_bytes()
    version = sha256(data)
    if version != expected:
        _fail(path, f"sha256 is {version} but the sidecar says {expected} (file modified or sidecar from "
                    f"another file)", f"ship the matching pair or {retrain}")
    if n_classes != N_CLASSES:
        _fail(path, f"sidecar says {n_classes} classes, the digitiser needs {N_CLASSES} "
                    f"(background, solid curve, dashed curve)", "use weights trained for 3 classes")
    try:
        state, cfg = read_weights(data)
    except (ValueError, KeyError, TypeError, struct.error) as e:
        _fail(path, f"not a {WEIGHTS_FORMAT} file ({e})", retrain)
    if cfg != sidecar_cfg:
        _fail(path, f"config in the file {cfg} differs from the sidecar's {sidecar_cfg}", retrain)
    try:
        config = SegmenterConfig(**cfg)
    except TypeError as e:
        _fail(path, f"config {cfg} does not build a SegmenterConfig ({e})", "use weights from this code version")
    if config.n_classes != N_CLASSES:
        _fail(path, f"config has n_classes={config.n_classes}, need {N_CLASSES}", "use weights trained for 3 classes")
    model = Segmenter(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        _fail(path, f"state dict does not match the model its config builds ({e})", retrain)
    model.to(device).eval()
    m = 2 * config.multiple
    with torch.no_grad():
        x = torch.linspace(0, 1, config.in_channels * m * m, device=device).reshape(1, config.in_channels, m, m)
        out = model(x)
    if out.shape != (1, N_CLASSES, m, m) or not torch.isfinite(out).all():
        _fail(path, f"test forward gave shape {tuple(out.shape)} finite={bool(torch.isfinite(out).all())}",
              f"the weights are broken (NaN/inf); {retrain}")
    log.info("loaded segmenter %s (model version %s) on %s", path, version[:12], device)
    return model, version


def average_weights(paths, out) -> str:
    """Write the element-wise mean of several shipped weights files (a "model soup") to `out`.

    The inputs must share one model config, and should be fine-tunes of one parent (averaging unrelated
    networks gives noise). Each input is preflighted by `load_segmenter`. Integer buffers (batch-norm step
    counts, unused in eval mode) are taken from the first. Deterministic: the same files in the same order
    give the same bytes. Returns the model version of the result.
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two weights files, got {len(paths)}")
    models = [load_segmenter(p)[0] for p in paths]
    configs = [dataclasses.asdict(m.config) for m in models]
    if any(c != configs[0] for c in configs):
        raise CheckpointError(f"weights {list(map(str, paths))} have different model configs {configs}: "
                              "only fine-tunes of one network can be averaged")
    states = [m.state_dict() for m in models]
    mean = {name: (sum(s[name].double() for s in states) / len(states)).to(t.dtype) if t.is_floating_point() else t
            for name, t in states[0].items()}
    models[0].load_state_dict(mean)
    return save_weights(models[0], models[0].config, out)
