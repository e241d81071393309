"""The one exception type the CLI turns into a clean message and a non-zero exit."""


class SigenError(Exception):
    """A problem the user can fix: bad input, missing weights, wrong flags.

    The message must say what is wrong and how to fix it; the CLI prints it without a traceback.
    """
