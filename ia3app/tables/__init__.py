"""Tables: CSV ingestion, the checks of a table for its role, and how rows are split.

Torch-free. Modules: ``csv_io`` (bytes from a person's upload -> a validated Table, or one specific
UserError; ``write_csv``, which neutralises spreadsheet formulas in every CSV the app hands back),
``checks`` (a labelled training set's labels and text columns, an unlabelled pool's rows) and
``splits`` (rows per label, the stratified held-out split, cross-validation folds).
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Table": "csv_io", "Rows": "csv_io", "load_csv": "csv_io", "write_csv": "csv_io", "neutralise_formula": "csv_io",
    "DELIMITERS": "csv_io", "COMPRESSED": "csv_io", "SNIFF_CHARS": "csv_io", "MAX_COLUMNS": "csv_io",
    "MAX_HEADER_CHARS": "csv_io", "MAX_CELL_CHARS": "csv_io", "MAX_LISTED": "csv_io",
    "label_counts": "checks", "check_labels": "checks", "check_text_columns": "checks", "pool_rows": "checks",
    "FEW_PER_CLASS": "checks", "MANY_PER_CLASS": "checks", "LONG_TEXT_CHARS": "checks",
    "sample_per_class": "splits", "split_holdout": "splits", "stratified_folds": "splits",
})
