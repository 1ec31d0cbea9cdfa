"""Backbones: loading a model (hub id or local folder, ``from_pretrained`` only), hub downloads
with progress, the worker's model cache, and the tiny random models built offline.
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "load_model": "loading", "LoadedModel": "loading", "load_config": "loading",
    "default_device": "loading",
    "ModelCache": "cache",
    "make_tiny_model": "tiny",
})
