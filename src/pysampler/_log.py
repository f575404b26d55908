"""pysampler's logger, set up on first use.

Errors are logged, never printed over the program's output: without a
handler of its own, logging would print them to stderr (its "last
resort"), so the package logger gets a NullHandler. Records show once the
application configures logging. Imported only where something is logged,
so an idle endpoint does not load the logging package.
"""

import logging

logging.getLogger("pysampler").addHandler(logging.NullHandler())


def logger(name: str) -> logging.Logger:
    """The logger ``name`` (a child of ``pysampler``)."""
    return logging.getLogger(name)
