"""(IA)^3 injection: learned vectors that rescale keys, values and feed-forward activations.

Model surgery by module replacement: every targeted linear layer is replaced (``setattr`` on
its parent) by an :class:`Ia3Layer` that holds the base layer and one vector. The vector
rescales either the layer's *output* (keys, values, the gated ``wi_1`` branch of T5 v1.1) or
its *input* (the FFN down projection). Vectors start at ones, so an injected model computes
exactly the base model's function.

One :class:`Ia3Model` handle per model owns the layers and offers:
- the trainable vectors (``vectors()`` / ``load_vectors()``), one predicate for what trains;
- merge ("push down") into the weights and bit-exact restore; while merged the plain base
  layers sit in the model (it *is* the transformers model), and loading other vectors into a
  merged handle re-merges them from the kept originals;
- mixed-task batches: a bank of named adapters, each batch row picking its own.

Where the layers go (the per-family table and :class:`Ia3Spec`) lives in ``placement.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from ia3app.errors import UserError
from ia3app.adapters.placement import SPECS, Ia3Spec, family_of

__all__ = [
    "SPECS", "VECTOR_SUFFIX", "Ia3Layer", "Ia3Model", "Ia3Spec", "family_of", "inject", "is_ia3_parameter",
]  # fmt: skip

VECTOR_SUFFIX = "ia3"  # parameter name inside each Ia3Layer; saved keys are "<module path>.ia3"


def _linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of nn.Linear or transformers' Conv1D ([in, out] weight)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2: y = x @ W + b with W of shape [in, out]
        n_in, n_out = module.weight.shape
        return n_in, n_out
    raise UserError(
        f"(IA)^3 can wrap only linear layers; got {type(module).__name__}. "
        "Check the module names in the spec."
    )


class Ia3State:
    """Shared by all layers of one model: the adapter bank and which adapter each batch row uses.

    The bank is ONE tensor ``(A + 1, total)``: row ``a`` holds adapter ``a``'s vectors of every layer
    side by side (layer ``l`` at columns ``[l.offset, l.offset + l.features)``; row 0 is ones, no
    adapter). A mixed batch gathers its rows' vectors of all layers with one index and one cast
    (:meth:`scales`), and each layer reads its slice: one gather per forward, not one per layer.
    """

    def __init__(self) -> None:
        self.bank: torch.Tensor | None = None  # (A + 1, total) fp32
        self._row_ids: torch.Tensor | None = None  # (B,) rows of the bank; 0 = no adapter
        self._scales: dict[torch.dtype, torch.Tensor] = {}
        self.gathers = 0
        """How many times the bank was gathered (one per mixed batch and activation dtype)."""

    @property
    def row_ids(self) -> torch.Tensor | None:
        return self._row_ids

    @row_ids.setter
    def row_ids(self, ids: torch.Tensor | None) -> None:
        self._row_ids, self._scales = ids, {}

    def scales(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, total): every layer's vectors for each batch row, in `dtype`, gathered once per batch."""
        gathered = self._scales.get(dtype)
        if gathered is None:
            if self.bank is None:
                raise RuntimeError("mixed batch requested but no adapter bank is loaded")
            gathered = self._scales[dtype] = self.bank[self._row_ids].to(dtype)
            self.gathers += 1
        return gathered


class Ia3Layer(nn.Module):
    """A linear layer whose output (or input) is rescaled element-wise by a learned vector."""

    def __init__(self, base: nn.Module, position: str, state: Ia3State) -> None:
        super().__init__()
        if position not in ("output", "input", "fused_kv"):
            raise ValueError(f"unknown position {position!r}")
        self.base = base
        self.position = position
        self.is_conv1d = not isinstance(base, nn.Linear)
        n_in, n_out = _linear_shape(base)
        if position == "fused_kv":
            if n_out % 3:
                raise UserError(f"fused q|k|v layer has {n_out} outputs, not a multiple of 3")
            self.kv_start = n_out // 3  # the queries are [0, kv_start): never scaled
            features = n_out - self.kv_start
        else:
            self.kv_start = 0
            features = n_out if position == "output" else n_in
        weight = base.weight
        self.ia3 = nn.Parameter(torch.ones(features, device=weight.device, dtype=torch.float32))
        # fused_kv: ones for the query third, so one multiply scales (q|k|v) without copying q.
        self.register_buffer("_ones_q", torch.ones(self.kv_start, device=weight.device), persistent=False)
        self._state = state  # plain attribute: not a submodule, not saved
        self.offset = 0  # this layer's first column in the state's bank (set by inject)
        self._backup: tuple[torch.Tensor, torch.Tensor | None] | None = None  # original weight, bias
        self._backup_stamp: tuple | None = None
        self._merged = False

    # Some modeling code reads e.g. `self.wo.weight.dtype`: expose the base layer's tensors.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)

    @property
    def features(self) -> int:
        return self.ia3.numel()

    @property
    def merged(self) -> bool:
        return self._merged

    @property
    def bank(self) -> torch.Tensor | None:
        """(A + 1, F): this layer's columns of the shared bank (a view; None without a bank)."""
        bank = self._state.bank
        return None if bank is None else bank[:, self.offset : self.offset + self.features]

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """The vector to multiply with: (F',) or, in a mixed batch, (B, 1, ..., 1, F').

        F' is the vector length, or for fused_kv the full q|k|v width (ones over the queries).
        """
        row_ids = self._state.row_ids
        if row_ids is None:
            vec = self.ia3 if self.position != "fused_kv" else torch.cat([self._ones_q, self.ia3])  # (F',)
            return vec.to(x.dtype)
        if row_ids.shape[0] != x.shape[0]:
            raise RuntimeError(
                f"mixed batch names {row_ids.shape[0]} rows but this forward has {x.shape[0]}; "
                "expand the adapter names the same way the rows are expanded"
            )
        scale = self._state.scales(x.dtype)[:, self.offset : self.offset + self.features]  # (B, F)
        if self.position == "fused_kv":
            scale = torch.cat([self._ones_q.to(x.dtype).expand(scale.shape[0], -1), scale], dim=-1)  # (B, F')
        return scale.reshape(scale.shape[0], *([1] * (x.dim() - 2)), scale.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._merged:  # vectors already folded into the weights
            return self.base(x)
        if self.position == "input":
            return self.base(x * self._scale(x))
        y = self.base(x)  # (..., out)
        return y * self._scale(y)  # fused_kv: the scale is ones over the query third

    # -- merge ("push down") and restore ------------------------------------------------------
    def _stamp(self) -> tuple:
        """Identity + in-place version of the base tensors: changes whenever anything writes them."""
        w, b = self.base.weight, getattr(self.base, "bias", None)
        return (w.data_ptr(), w._version, None if b is None else (b.data_ptr(), b._version))

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the vector into the weights (and bias). Keeps the originals for a bit-exact restore.

        The originals are kept after restore() too, so merging again costs one multiply; they
        are re-taken if anything wrote the weights since.
        """
        if self._merged:
            return  # already merged: never scale twice
        weight, bias = self.base.weight, getattr(self.base, "bias", None)
        if self._backup is None or self._backup_stamp != self._stamp():
            self._backup = (weight.detach().clone(), None if bias is None else bias.detach().clone())
        self._write_merged()
        self._merged = True

    @torch.no_grad()
    def _write_merged(self) -> None:
        """weights = originals * vector (computed from the originals: re-merging never compounds)."""
        weight, bias = self.base.weight, getattr(self.base, "bias", None)
        w0, b0 = self._backup
        vec = self.ia3.detach().to(device=weight.device, dtype=torch.float32)  # (F,)
        # nn.Linear weight is [out, in]; Conv1D weight is [in, out].
        out_dim = 1 if self.is_conv1d else 0
        if self.position == "input":
            scaled_into(weight, w0, vec, 1 - out_dim)
        elif self.position == "output":
            scaled_into(weight, w0, vec, out_dim)
            if bias is not None:
                scaled_into(bias, b0, vec, 0)
        else:  # fused_kv: only the k|v part of the output dimension
            n, start = self.features, self.kv_start
            scaled_into(weight.narrow(out_dim, start, n), w0.narrow(out_dim, start, n), vec, out_dim)
            if bias is not None:
                scaled_into(bias.narrow(0, start, n), b0.narrow(0, start, n), vec, 0)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact original weights (bit-for-bit; nothing is divided back)."""
        if not self._merged:
            return
        weight, bias = self._backup
        self.base.weight.copy_(weight)
        if bias is not None:
            self.base.bias.copy_(bias)
        self._merged = False
        self._backup_stamp = self._stamp()  # the originals describe the live weights again

    def release_backup(self) -> None:
        """Free the kept originals of a restored layer (the next merge takes them again)."""
        if not self._merged:
            self._backup = None


def scaled_into(dst: torch.Tensor, src: torch.Tensor, vec: torch.Tensor, dim: int) -> None:
    """dst = src * vec along `dim`, computed in fp32, written in dst's dtype (one pass for fp32)."""
    shape = [1] * src.dim()
    shape[dim] = -1
    scale = vec.view(shape)
    if dst.dtype == torch.float32 and dst.is_contiguous():
        torch.mul(src, scale, out=dst)
    else:
        dst.copy_((src.to(torch.float32) * scale).to(dst.dtype))


def is_ia3_parameter(name: str) -> bool:
    """The one predicate for what trains and what is saved."""
    return name == VECTOR_SUFFIX or name.endswith("." + VECTOR_SUFFIX)


class Ia3Model:
    """Handle over a transformers model with (IA)^3 layers injected."""

    def __init__(self, model: nn.Module, spec: Ia3Spec, family: str, layers: dict[str, Ia3Layer], state: Ia3State):
        self.model = model
        self.spec = spec
        self.family = family
        self.layers = layers
        self.state = state
        self._bank_names: list[str] = []  # adapter names, bank row i+1
        self._bank_vectors: dict[str, dict[str, torch.Tensor]] = {}

    # -- vectors -------------------------------------------------------------------------------
    def vectors(self) -> dict[str, torch.Tensor]:
        """The active adapter as {"<module path>.ia3": (F,) fp32 tensor} (detached copies)."""
        return {f"{name}.{VECTOR_SUFFIX}": layer.ia3.detach().clone() for name, layer in self.layers.items()}

    def shapes(self) -> dict[str, int]:
        return {f"{name}.{VECTOR_SUFFIX}": layer.features for name, layer in self.layers.items()}

    @torch.no_grad()
    def load_vectors(self, vectors: Mapping[str, torch.Tensor]) -> None:
        """Set the active adapter. Every key must match a layer and its length, or UserError.

        On a merged handle the weights are re-merged from the kept originals (one multiply per
        layer, no restore pass): the fast way to switch the adapter a merged model serves.
        """
        self.check_vectors(vectors)
        for key, value in vectors.items():
            layer = self.layers[key[: -len(VECTOR_SUFFIX) - 1]]
            layer.ia3.copy_(value.reshape(-1).to(layer.ia3.dtype))
            if layer.merged:
                layer._write_merged()

    def check_vectors(self, vectors: Mapping[str, torch.Tensor]) -> None:
        expected = self.shapes()
        missing = sorted(set(expected) - set(vectors))
        extra = sorted(set(vectors) - set(expected))
        wrong = [
            f"{k} has {vectors[k].numel()} values, the model needs {n}"
            for k, n in expected.items()
            if k in vectors and vectors[k].numel() != n
        ]
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            problems.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            problems.append(f"{len(wrong)} mis-shaped ({wrong[0]})")
        if problems:
            raise UserError("the (IA)^3 vectors do not fit this model: " + "; ".join(problems))

    def reset(self) -> None:
        """Vectors back to ones (the identity)."""
        with torch.no_grad():
            for layer in self.layers.values():
                layer.ia3.fill_(1.0)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The vectors (the parameters ``is_ia3_parameter`` names), in layer order."""
        return [layer.ia3 for layer in self.layers.values()]

    def num_added_parameters(self) -> int:
        return sum(layer.features for layer in self.layers.values())

    # -- merge ---------------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return any(layer.merged for layer in self.layers.values())

    def _put(self, path: str, module: nn.Module) -> None:
        parent, _, child = path.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, child, module)

    def merge(self) -> None:
        """Fold the active vectors into the weights. Idempotent (never scales twice).

        The plain base layers go back into the model while merged: a merged model *is* the
        transformers model (zero extra inference cost, plain state-dict keys for save_pretrained).
        """
        for path, layer in self.layers.items():
            if not layer.merged:
                layer.merge()
                self._put(path, layer.base)

    def restore(self) -> None:
        """Undo merge(): the base weights come back bit-for-bit, the (IA)^3 layers back in place."""
        for path, layer in self.layers.items():
            if layer.merged:
                self._put(path, layer)
                device = layer.base.weight.device
                if layer.ia3.device != device:  # the model moved while merged: follow it
                    layer.to(device)
                    if self.state.bank is not None:
                        self.state.bank = self.state.bank.to(device)
                layer.restore()

    def release_backups(self) -> None:
        """Free the originals kept for restore() (only on a restored handle); merge() re-takes them."""
        for layer in self.layers.values():
            layer.release_backup()

    # -- mixed-task batches --------------------------------------------------------------------
    def add_adapter(self, name: str, vectors: Mapping[str, torch.Tensor]) -> None:
        """Register named vectors in the bank used by mixed batches (replaces a same-named one)."""
        self.check_vectors(vectors)
        if name not in self._bank_vectors:
            self._bank_names.append(name)
        self._bank_vectors[name] = {k: v.detach().reshape(-1).to(torch.float32) for k, v in vectors.items()}
        self._rebuild_bank()

    def remove_adapter(self, name: str) -> None:
        self._bank_names.remove(name)
        del self._bank_vectors[name]
        self._rebuild_bank()

    @property
    def adapter_names(self) -> list[str]:
        return list(self._bank_names)

    def flat(self, vectors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One adapter's vectors as one bank row: (total,) fp32, in layer order (on the CPU)."""
        return torch.cat([vectors[f"{path}.{VECTOR_SUFFIX}"].reshape(-1).to("cpu", torch.float32)
                          for path in self.layers])

    def _rebuild_bank(self) -> None:
        ones = torch.ones(self.num_added_parameters())
        rows = [ones] + [self.flat(self._bank_vectors[n]) for n in self._bank_names]
        self.state.bank = torch.stack(rows).to(next(iter(self.layers.values())).ia3.device)  # (A+1, total)

    def row_ids(self, names: Sequence[str | None]) -> torch.Tensor:
        """Bank indices for per-row adapter names (None = the base model)."""
        index = {n: i + 1 for i, n in enumerate(self._bank_names)}
        unknown = sorted({n for n in names if n is not None and n not in index})
        if unknown:
            raise UserError(f"unknown adapter(s) {unknown}; loaded: {self._bank_names}")
        device = next(iter(self.layers.values())).ia3.device
        return torch.tensor([0 if n is None else index[n] for n in names], device=device)

    @contextmanager
    def mixed_batch(self, names: Sequence[str | None]) -> Iterator[None]:
        """Within this block, batch row i uses adapter names[i] (None: no adapter).

        The ids follow the batch dimension of every forward; a caller that expands rows
        (e.g. one row per answer choice) expands the names the same way.
        """
        if self.merged:
            raise RuntimeError("mixed batches need unmerged vectors: call restore() first")
        previous = self.state.row_ids
        self.state.row_ids = self.row_ids(names)
        try:
            yield
        finally:
            self.state.row_ids = previous

    # -- unwrap --------------------------------------------------------------------------------
    def unload(self, merge: bool = True) -> nn.Module:
        """Replace every Ia3Layer by its base layer (weights merged if `merge`, else restored).

        Returns the plain transformers model, with the original module names, e.g. for
        ``save_pretrained`` of a merged full model. The handle is unusable afterwards.
        """
        if merge:
            self.merge()
        else:
            self.restore()
        for path, layer in self.layers.items():
            self._put(path, layer.base)
            layer._backup, layer._merged = None, False
        self.layers = {}
        self.model._ia3_injected = False
        return self.model


def inject(model: nn.Module, spec: Ia3Spec | None = None, freeze: bool = True) -> Ia3Model:
    """Insert (IA)^3 layers into a transformers model, in place; returns the handle.

    With no spec, the family's defaults are used (see SPECS); an unsupported architecture is
    a UserError that shows how to pass an explicit Ia3Spec. With freeze, every base
    parameter stops requiring gradients and only the vectors train.
    """
    # A merged model holds its plain layers again, so the flag (not the module types) tells.
    if getattr(model, "_ia3_injected", False) or any(isinstance(m, Ia3Layer) for m in model.modules()):
        raise UserError("this model already has (IA)^3 layers; inject once per model")
    family = family_of(model.config) if spec is None else "custom"
    spec = spec or SPECS[family]
    state = Ia3State()
    targets = [(name, spec.position_of(name)) for name, _ in model.named_modules() if name]
    targets = [(name, pos) for name, pos in targets if pos is not None]
    if not targets:
        raise UserError(
            f"no module of this {type(model).__name__} matches the (IA)^3 spec {spec}; "
            "look at model.named_modules() for the names to use"
        )
    layers: dict[str, Ia3Layer] = {}
    offset = 0
    for name, position in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = Ia3Layer(getattr(parent, child), position, state)
        layer.offset, offset = offset, offset + layer.features
        setattr(parent, child, layer)
        layers[name] = layer
    if freeze:
        for name, param in model.named_parameters():
            param.requires_grad_(is_ia3_parameter(name))
    model._ia3_injected = True
    return Ia3Model(model, spec, family, layers, state)
