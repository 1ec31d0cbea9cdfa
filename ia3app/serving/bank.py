"""Adapters resident beside one backbone, for serving many of them at once.

Three pieces, each used by :mod:`ia3app.serving.engine`:

- :func:`read_adapter` / :class:`AdapterInfo`: what serving needs from an adapter folder (base
  model, template, choices, max length), keyed by the folder and the (mtime, size, inode) of both
  of its files, so a rewritten adapter (``atomic_write`` replaces the file) is read again.
  The info holds no vectors: those live only in the bank.
- :class:`AdapterBank`: the vectors of up to ``max_slots`` adapters in ONE tensor for all (IA)^3
  layers, ``(capacity + 1, total)`` on the model's device (the handle's ``state.bank``; row 0 is
  ones: no adapter). Adapters are
  written into a free row on first use, the least recently used one is overwritten when the
  bytes budget is full, and a changed file rewrites its row in place. The bank is also the
  ``handle`` that :func:`ia3app.evaluation.scoring.score_choices` needs for ``adapter_names=``: the names
  are bank rows, so a mixed-task batch gathers each row's vectors of every layer with one index.
- :class:`MergedWeights`: a second copy of every wrapped linear layer with ONE adapter folded
  into its weights. Switching the model between the mixed path (the (IA)^3 layers over the
  untouched original weights) and the merged path is a module swap, never a restore copy; loading
  another adapter into the copy is one multiply per wrapped weight. Its memory (the size of the
  wrapped weights, like the originals a merge keeps for restore) is reported by ``nbytes``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ia3app.adapters.files import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig, load_adapter
from ia3app.errors import UserError
from ia3app.adapters.ia3 import VECTOR_SUFFIX, Ia3Model, scaled_into
from ia3app.templates.spec import TemplateSpec

ROW_BYTES = 4  # vectors are fp32 in the bank (the layers cast to the activations' dtype)


@dataclass(frozen=True)
class AdapterInfo:
    """What serving needs from an adapter folder (read once per version of its files)."""

    key: tuple
    """(resolved folder, stat of adapter.safetensors, stat of ia3_config.json): changes with the files."""
    path: str
    base_model: str
    revision: str | None
    template: TemplateSpec
    choices: list[str]
    """Class names: the fixed choices, or 'choice 1'... for per-row choices."""
    max_length: int
    config: AdapterConfig
    nbytes: int
    """Bytes of its vectors in the bank (fp32)."""
    temperature: float = 1.0
    """Calibration temperature (ia3_config.json "calibration"): probabilities are softmax(log p / T)."""
    abstain_threshold: float | None = None
    """Below this top probability a prediction is "unsure" (ia3_config.json "abstain_threshold")."""


def _stat(path: Path) -> tuple[int, int, int]:
    s = path.stat()
    return (s.st_mtime_ns, s.st_size, s.st_ino)


def adapter_key(adapter_dir: str | Path) -> tuple:
    """The identity of an adapter folder's current files; UserError when it is not an adapter folder."""
    folder = Path(adapter_dir)
    try:
        return (str(folder.resolve()), _stat(folder / WEIGHTS_NAME), _stat(folder / CONFIG_NAME))
    except (FileNotFoundError, NotADirectoryError):
        load_adapter(folder)  # raises the specific UserError (no folder, a pickle, a PEFT folder...)
        raise UserError(f"{folder} is not an adapter folder: {WEIGHTS_NAME} or {CONFIG_NAME} is missing") from None


def confidence_settings(config: AdapterConfig, where: str) -> dict:
    """{"temperature", "abstain_threshold"} from an adapter config, checked (a hand-edited file with a
    bad value fails with the key named, rather than serving wrong probabilities)."""
    from ia3app.evaluation.calibration import check_threshold

    cal = config.get("calibration") or {}
    t = cal.get("temperature", 1.0) if isinstance(cal, dict) else None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
        raise UserError(f"{where}/{CONFIG_NAME}: calibration.temperature must be a positive number (got {t!r})")
    try:
        threshold = check_threshold(config.get("abstain_threshold"))
    except ValueError as exc:
        raise UserError(f"{where}/{CONFIG_NAME}: {exc}") from None
    return {"temperature": float(t), "abstain_threshold": threshold}


def read_adapter(adapter_dir: str | Path) -> tuple[AdapterInfo, dict[str, torch.Tensor]]:
    """(info, vectors) of an adapter folder written by save_adapter / run_job (safetensors only)."""
    folder = Path(adapter_dir)
    key = adapter_key(folder)
    vectors, config = load_adapter(folder)
    if "template" not in config:
        raise UserError(
            f"the adapter in {folder} records no template, so rows cannot be turned into inputs; "
            "train it with ia3app (python -m ia3app train) or add 'template' to ia3_config.json"
        )
    template = TemplateSpec.from_dict(config["template"])
    info = AdapterInfo(
        key=key,
        path=key[0],
        base_model=config["base_model"],
        revision=config.get("revision"),
        template=template,
        choices=list(config.get("choices") or template.choices or []),
        max_length=int((config.get("recipe") or {}).get("max_length", 256)),
        config=config,
        nbytes=ROW_BYTES * sum(v.numel() for v in vectors.values()),
        **confidence_settings(config, str(folder)),
    )
    return info, vectors


class AdapterBank:
    """Device-resident vectors of many adapters for one (IA)^3 handle; LRU within a bytes budget.

    Not thread-safe: one serving thread owns it (and the model it indexes).
    """

    def __init__(self, handle: Ia3Model, budget_bytes: int, grow: int = 32) -> None:
        self.handle = handle
        self.layers = list(handle.layers.items())
        self.keys = [f"{path}.{VECTOR_SUFFIX}" for path, _ in self.layers]
        self.adapter_bytes = ROW_BYTES * handle.num_added_parameters()
        self.max_slots = max(1, int(budget_bytes) // self.adapter_bytes)
        self.grow = grow
        self.capacity = 0
        self.device = next(iter(handle.layers.values())).ia3.device
        self.state = handle.state
        self._resident: OrderedDict[str, tuple[tuple, int]] = OrderedDict()  # path -> (key, row); LRU first
        self._free: list[int] = []
        self.loads = 0
        """Adapters written into the bank (first use, reload after eviction or a file change)."""
        self.evictions = 0
        total = handle.num_added_parameters()
        self.state.bank = torch.ones(1, total, device=self.device)  # (1, total): row 0, no adapter

    def __len__(self) -> int:
        return len(self._resident)

    @property
    def nbytes(self) -> int:
        """Bytes of the bank tensor (capacity rows + the ones row)."""
        return self.state.bank.numel() * self.state.bank.element_size()

    def resident(self, info: AdapterInfo) -> bool:
        entry = self._resident.get(info.path)
        return entry is not None and entry[0] == info.key

    def _grow(self, need: int) -> None:
        """Room for `need` rows (never beyond max_slots): a new tensor, old rows copied."""
        new = min(self.max_slots, max(need, self.capacity + self.grow))
        bank = torch.ones(new + 1, self.state.bank.shape[1], device=self.device)  # (capacity + 1, total)
        bank[: self.capacity + 1] = self.state.bank
        self.state.bank = bank
        self._free.extend(range(self.capacity + 1, new + 1))
        self.capacity = new

    def _row_for(self, path: str, pinned: set[str]) -> int:
        if not self._free and self.capacity < self.max_slots:
            self._grow(self.capacity + 1)
        if self._free:
            return self._free.pop(0)
        victim = next((p for p in self._resident if p not in pinned), None)
        if victim is None:
            raise RuntimeError(f"the adapter bank holds {self.max_slots} adapters, all needed by this batch")
        _, row = self._resident.pop(victim)
        self.evictions += 1
        return row

    @torch.no_grad()
    def ensure(self, info: AdapterInfo, pinned: set[str] = frozenset()) -> int:
        """The bank row holding this version of the adapter, loading it when absent or changed.

        `pinned` names adapter paths that must stay (the rest of the batch being assembled).
        UserError when the folder cannot be read or its vectors do not fit this model.
        """
        entry = self._resident.get(info.path)
        if entry is not None and entry[0] == info.key:
            self._resident.move_to_end(info.path)
            return entry[1]
        _, vectors = read_adapter(info.path)
        self.handle.check_vectors(vectors)
        row = entry[1] if entry is not None else self._row_for(info.path, set(pinned) | {info.path})
        # One host-to-device copy for the whole adapter into its bank row (not one per layer).
        self.state.bank[row].copy_(self.handle.flat(vectors))
        self._resident[info.path] = (info.key, row)
        self._resident.move_to_end(info.path)
        self.loads += 1
        return row

    def vectors(self, row: int) -> dict[str, torch.Tensor]:
        """The vectors of one bank row, {"<module>.ia3": (F,)} (views, on the device)."""
        parts = self.state.bank[row].split([layer.features for _, layer in self.layers])
        return dict(zip(self.keys, parts))

    # The handle protocol of ia3app.evaluation.scoring: adapter names are bank rows here.
    @contextmanager
    def mixed_batch(self, rows: Sequence[int]) -> Iterator[None]:
        """Within this block, batch row i uses bank row rows[i] (0: no adapter)."""
        state = self.handle.state
        previous = state.row_ids
        state.row_ids = torch.tensor(list(rows), dtype=torch.long, device=self.device)  # (B,)
        try:
            yield
        finally:
            state.row_ids = previous


def _twin(layer: nn.Module, scale_bias: bool) -> nn.Module:
    """A shallow copy of a linear layer with its own weight (and bias, when the vector scales it)."""
    twin = copy.copy(layer)
    twin._parameters = dict(layer._parameters)  # the copy must not write into the original's dict
    twin.weight = nn.Parameter(torch.empty_like(layer.weight), requires_grad=False)
    if scale_bias and getattr(layer, "bias", None) is not None:
        twin.bias = nn.Parameter(torch.empty_like(layer.bias), requires_grad=False)
    return twin


class MergedWeights:
    """One adapter folded into a copy of the wrapped layers; `install` swaps the copies into the model."""

    def __init__(self, handle: Ia3Model) -> None:
        self.handle = handle
        self._twins: dict[str, nn.Module] | None = None
        self.active: Any = None
        """Key of the adapter folded into the copies (None: none yet)."""
        self.installed = False
        self.merges = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the merged copies (tensors shared with the originals not counted)."""
        total = 0
        for path, twin in (self._twins or {}).items():
            base = self.handle.layers[path].base
            total += sum(p.numel() * p.element_size() for n, p in twin._parameters.items()
                         if p is not None and p is not base._parameters.get(n))
        return total

    @torch.no_grad()
    def load(self, key: Any, vectors: dict[str, torch.Tensor]) -> None:
        """Fold `vectors` into the copies (computed from the untouched originals, as Ia3Layer.merge does)."""
        if self._twins is None:
            self._twins = {path: _twin(layer.base, layer.position != "input") for path, layer in self.handle.layers.items()}
        for path, layer in self.handle.layers.items():
            twin, base = self._twins[path], layer.base
            vec = vectors[f"{path}.{VECTOR_SUFFIX}"].to(device=base.weight.device, dtype=torch.float32)  # (F,)
            out_dim = 1 if layer.is_conv1d else 0  # nn.Linear weight is [out, in]; Conv1D [in, out]
            if layer.position == "input":
                scaled_into(twin.weight, base.weight, vec, 1 - out_dim)
                continue
            start, n = layer.kv_start, layer.features  # fused_kv: only the k|v part; else all outputs
            scaled_into(twin.weight.narrow(out_dim, start, n), base.weight.narrow(out_dim, start, n), vec, out_dim)
            if start:
                twin.weight.narrow(out_dim, 0, start).copy_(base.weight.narrow(out_dim, 0, start))
            if base.bias is not None:
                scaled_into(twin.bias.narrow(0, start, n), base.bias.narrow(0, start, n), vec, 0)
                if start:
                    twin.bias.narrow(0, 0, start).copy_(base.bias.narrow(0, 0, start))
        self.active = key
        self.merges += 1

    def _put(self, path: str, module: nn.Module) -> None:
        parent, _, child = path.rpartition(".")
        setattr(self.handle.model.get_submodule(parent) if parent else self.handle.model, child, module)

    def install(self) -> None:
        """The merged copies into the model (the model then runs at the base model's cost)."""
        if not self.installed and self._twins is not None:
            for path, twin in self._twins.items():
                self._put(path, twin)
            self.installed = True

    def uninstall(self) -> None:
        """The (IA)^3 layers back (over the original weights), for mixed batches."""
        if self.installed:
            for path, layer in self.handle.layers.items():
                self._put(path, layer)
            self.installed = False

    def release(self) -> None:
        """Free the copies (the next load allocates them again)."""
        self.uninstall()
        self._twins, self.active = None, None
