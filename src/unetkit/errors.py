"""The one exception type for user mistakes.

Bad data, a wrong config key, an unreadable checkpoint: these are the user's to fix, so they raise
`UnetkitError` with a message that names the file, key or value and says what to do. The CLI prints it on
one line and exits with status 2. Bugs still raise ordinary exceptions with tracebacks.
"""


class UnetkitError(Exception):
    """A problem with the user's data, config, checkpoint or arguments (not a bug in unetkit)."""
