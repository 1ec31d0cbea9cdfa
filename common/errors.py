"""One error class for mistakes a person can fix, shared by every layer (ia3app, storage, jobs, ui).

Its message is shown verbatim by the CLI, the web UI and the API, so it is worded as a
diagnosis ("column 'text' not found; the file has: review, stars"). Anything else is a bug
or an environment failure and propagates with its traceback.

It lives here, below every layer, so that storage can raise it without importing ia3app;
``ia3app.errors.UserError`` is this same class.
"""


class UserError(Exception):
    """A problem in the user's input (data, template, settings, model choice, account)."""
