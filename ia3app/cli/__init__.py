"""`python -m ia3app`: the command line. ``main`` (the parser and sub-commands), ``train_command``,
``predict_commands`` (predict, suggest), ``adapter_commands`` (evaluate, export), ``model_commands``
(make-tiny-model, prepare-model), ``data_args`` (data and template arguments, the templates command),
``output`` (the evaluation table)."""
