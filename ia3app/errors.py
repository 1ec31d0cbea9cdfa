"""One error class for mistakes a person can fix (defined in common.errors, below every layer).

Its message is shown verbatim by the CLI, the web UI and the API, so it is worded as a
diagnosis ("column 'text' not found; the file has: review, stars"). Anything else is a bug
or an environment failure and propagates with its traceback.
"""


from common.errors import UserError  # noqa: F401  (one class for every layer; storage raises it too)


class Cancelled(Exception):
    """Training was stopped on request (should_stop() returned True); not an error to report."""
