"""(IA)^3 adapters: the vectors, where they go, their files on disk, and what they export to.

Modules: ``ia3`` (injection, merge, the Ia3Model handle), ``placement`` (per-architecture
defaults), ``files`` (adapter.safetensors + ia3_config.json; ``folder_config`` names the JSON's keys, torch-free), ``params`` (parameter counts),
``peft_export`` (a PEFT IA3 folder), ``tfew_vectors`` (T-Few's released vectors),
``vector_sources`` (where they may come from; torch-free), ``model_card`` (the adapter's README).
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "inject": "ia3", "Ia3Model": "ia3", "VECTOR_SUFFIX": "ia3",
    "Ia3Spec": "placement", "family_of": "placement",
    "save_adapter": "files", "load_adapter": "files", "apply_adapter": "files",
    "AdapterConfig": "folder_config",
    "export_peft": "peft_export",
    "check_source": "vector_sources",
})
