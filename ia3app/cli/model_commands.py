"""`python -m ia3app make-tiny-model` and `prepare-model`: a tiny random model for tests and demos, and a
bundled real model converted once into the model cache (both offline)."""

from __future__ import annotations

from ia3app.cli.output import quiet_transformers
from ia3app.errors import UserError


def cmd_make_tiny_model(args) -> int:
    quiet_transformers()
    from ia3app.backbones.tiny import make_tiny_model

    sizes = {k: getattr(args, k) for k in ("d_model", "layers", "heads", "d_ff")}
    out = make_tiny_model(args.kind, args.out, seed=args.seed, **sizes)
    print(f"tiny {args.kind} model (random weights) written to {out}")
    return 0


def cmd_prepare_model(args) -> int:
    quiet_transformers()
    from ia3app.backbones import bundled

    model = bundled.get(args.name)
    if model is None:
        raise UserError(f"{args.name!r} is not a bundled model; bundled: {', '.join(bundled.MODELS)}")
    path = bundled.ensure_converted(model, args.data_dir, progress=lambda m: print(m, flush=True))
    print(f"{model.name} ({model.licence}) is ready: {path}")
    return 0
