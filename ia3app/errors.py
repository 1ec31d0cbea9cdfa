"""One error class for mistakes a person can fix.

Its message is shown verbatim by the CLI, the web UI and the API, so it is worded as a
diagnosis ("column 'text' not found; the file has: review, stars"). Anything else is a bug
or an environment failure and propagates with its traceback.
"""


class UserError(Exception):
    """A problem in the user's input (data, template, settings, model choice)."""


class Cancelled(Exception):
    """Training was stopped on request (should_stop() returned True); not an error to report."""
