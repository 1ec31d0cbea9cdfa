"""T-Few's released (IA)^3 vectors for T0-3B (pre-trained on the T0 multitask mixture).

The file is a plain state dict of 192 fp32 tensors with keys ``<module path>.multi_lora_b``
and shapes (F, 1), the placement of our "t5-gated" family: k and v of self- and cross-attention
and the output of ``wi_1``. It is read with ``torch.load(weights_only=True)``: tensors only,
no unpickling of arbitrary objects.

In production the same loader takes the file's URL in the T-Few repository: it is downloaded
once into a cache folder (atomic write) with its sha256 recorded next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

import torch

from ia3app.errors import UserError
from ia3app.adapters.ia3 import VECTOR_SUFFIX, Ia3Model
from ia3app.adapters.vector_sources import ALLOWED_URLS, TFEW_URL, check_source, is_url

TFEW_SUFFIX = "multi_lora_b"
# sha256 of the copy this project is tested with (tests/fixtures/tfew/t03b_ia3_finish.pt).
TFEW_SHA256 = "431451f16e8fc849a772952c9183d5dc63909282444192a70584d661cecb5374"
MAX_VECTORS_BYTES = 16_000_000
"""Largest vectors file read or downloaded (the release is 2.2 MB)."""


def convert_tfew_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``<path>.multi_lora_b`` (F, 1) -> ``<path>.ia3`` (F,) fp32; UserError on foreign keys/shapes."""
    out: dict[str, torch.Tensor] = {}
    problems = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
            continue
        if not key.endswith("." + TFEW_SUFFIX):
            problems.append(f"unexpected key {key} (T-Few's (IA)^3 keys end in .{TFEW_SUFFIX})")
            continue
        if value.dim() != 2 or value.shape[1] != 1:
            problems.append(f"{key} has shape {tuple(value.shape)}, expected (features, 1)")
            continue
        out[key[: -len(TFEW_SUFFIX)] + VECTOR_SUFFIX] = value.detach()[:, 0].to(torch.float32)  # (F,)
    if problems:
        raise UserError(f"not a T-Few (IA)^3 checkpoint: {len(problems)} problem(s), e.g. " + "; ".join(problems[:3]))
    if not out:
        raise UserError("the T-Few checkpoint holds no (IA)^3 vectors")
    return out


def load_tfew_vectors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read T-Few's ``.pt`` (tensors only, weights_only=True) and convert it to our keys."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise UserError(f"T-Few vectors not found at {path}") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, IndexError, KeyError, TypeError,
            AttributeError, OSError) as exc:  # refused or corrupt: the file is the problem, not the code
        raise UserError(f"{path} is not a readable tensors-only PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict of vectors")
    return convert_tfew_state_dict(state)


def apply_tfew_vectors(handle: Ia3Model, path_or_vectors: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Load T-Few's vectors into a T0-3B-shaped handle; every key must map, shapes must match."""
    vectors = path_or_vectors if isinstance(path_or_vectors, Mapping) else load_tfew_vectors(path_or_vectors)
    if handle.family != "t5-gated":
        raise UserError(
            f"T-Few's released vectors are for T0-3B (a gated T5); this model's (IA)^3 family is {handle.family!r}"
        )
    handle.load_vectors(vectors)  # check_vectors: missing / extra / mis-sized keys are UserErrors


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_name(url: str) -> str:
    base = Path(urllib.parse.urlparse(url).path).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def resolve_tfew_vectors(
    path_or_url: str | Path = TFEW_URL,
    cache_dir: str | Path | None = None,
    expected_sha256: str | None = TFEW_SHA256,
    *,
    allowed_dirs: list[Path] | None = None,
    allowed_urls: frozenset[str] | set[str] = ALLOWED_URLS,
    max_bytes: int = MAX_VECTORS_BYTES,
) -> Path:
    """A local path to T-Few's vectors: the path itself, or the URL downloaded once into cache_dir.

    Only URLs in ``allowed_urls`` and (given ``allowed_dirs``) files inside those folders; at most
    ``max_bytes``; the file must have ``expected_sha256`` (T-Few's release by default; None skips).
    The download is written atomically, with a sidecar ``<file>.json`` recording url and sha256;
    a cache hit checks the file against that checksum too.
    """
    text = str(path_or_url).strip()
    check_source(text, allowed_dirs, allowed_urls)
    if not is_url(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(f"T-Few vectors not found at {path}; pass the file's path or its URL ({TFEW_URL})")
        if path.stat().st_size > max_bytes:
            raise UserError(f"{path} is {path.stat().st_size:,} bytes; T-Few's vectors are under {max_bytes:,}")
        if expected_sha256 and _sha256(path) != expected_sha256:
            raise UserError(f"{path} is not T-Few's released vectors file (its sha256 is not {expected_sha256})")
        return path
    if cache_dir is None:
        raise UserError("downloading the T-Few vectors needs a cache folder (cache_dir)")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / _cache_name(text)
    sidecar = target.with_name(target.name + ".json")
    if target.is_file() and sidecar.is_file():
        recorded = json.loads(sidecar.read_text())
        actual = _sha256(target)
        if actual != recorded.get("sha256"):
            raise UserError(
                f"the cached T-Few vectors {target} do not match their recorded sha256 (file damaged?); "
                "delete the file and its .json to download it again"
            )
        if expected_sha256 and actual != expected_sha256:
            raise UserError(f"the cached {target} has sha256 {actual}, not the expected {expected_sha256}")
        return target
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(text, timeout=60) as response:  # noqa: S310
            received = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                received += len(chunk)
                if received > max_bytes:
                    raise UserError(f"{text} is larger than {max_bytes:,} bytes; T-Few's vectors are smaller")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise UserError(f"{text} downloaded with sha256 {digest.hexdigest()}, not the expected {expected_sha256}")
        os.replace(tmp, target)
    except OSError as exc:
        raise UserError(f"could not download the T-Few vectors from {text} ({exc})") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    record = {"url": text, "sha256": digest.hexdigest(), "bytes": target.stat().st_size}
    side_tmp = sidecar.with_name(sidecar.name + ".tmp")
    side_tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(side_tmp, sidecar)
    return target
