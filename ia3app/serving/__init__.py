"""Serving: one backbone per (model, revision, device, dtype), every adapter beside it.

Modules: ``interface`` (the Serving protocol that ServingEngine and jobs.ray_serve.RayServing
implement), ``engine`` (ServingEngine, CSV predictions), ``lane`` (one backbone's batcher),
``bank`` (resident adapter vectors, LRU within a byte budget).
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Serving": "interface",
    "ServingEngine": "engine", "ServingConfig": "engine", "predict_csv": "engine",
    "Prediction": "lane",
    "AdapterBank": "bank", "read_adapter": "bank",
})
