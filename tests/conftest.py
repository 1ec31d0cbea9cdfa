"""Shared fixtures: offline mode, tiny models built once per session, the shared data folder."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FEWSHOT = SHARED / "data" / "fewshot"
TFEW_VECTORS = SHARED / "data" / "tfew" / "t03b_ia3_finish.pt"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """tiny_model_dir(kind, **sizes) -> path of a tiny random model saved with save_pretrained.

    Built once per (kind, sizes) per session; loaded back through from_pretrained like any model.
    """
    from ia3app.tiny import make_tiny_model

    built: dict = {}

    def build(kind: str = "t0", **sizes) -> Path:
        key = (kind, tuple(sorted(sizes.items())))
        if key not in built:
            name = kind + "".join(f"-{k}{v}" for k, v in key[1])
            built[key] = make_tiny_model(kind, tmp_path_factory.mktemp(name), **sizes)
        return built[key]

    return build


@pytest.fixture
def fewshot_dir():
    if not FEWSHOT.is_dir():
        pytest.skip("../shared/data/fewshot is absent (a user's clone has no shared/)")
    return FEWSHOT


@pytest.fixture
def tfew_vectors_path():
    if not TFEW_VECTORS.is_file():
        pytest.skip("../shared/data/tfew/t03b_ia3_finish.pt is absent")
    return TFEW_VECTORS
