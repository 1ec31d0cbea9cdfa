"""`python -m ia3app`: the command line. ``main`` (sub-commands), ``data_args`` (data and
template arguments)."""
