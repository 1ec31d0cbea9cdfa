"""The T-Few recipe: training the (IA)^3 vectors with the three losses, and running a whole job.

Modules: ``train`` (the training loop), ``losses`` (L_LM + L_UL + L_LN), ``adafactor`` (the
optimizer for many small vectors), ``batches`` (inputs tokenized once, on the device),
``checkpoint`` (resumable checkpoints), ``device_plan`` (compiled blocks, activation
checkpointing, micro-batches), ``run_job`` (one job from spec to adapter), ``step_probe``
(training time measured from a few real steps).

(``train.train`` and ``run_job.run_job`` are imported from their modules: a package attribute of
the same name as a submodule would be shadowed by it.)
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "TrainResult": "train",
    "tfew_losses": "losses",
    "time_steps": "step_probe",
})
