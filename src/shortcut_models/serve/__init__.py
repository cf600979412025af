"""`shortcut serve`: a local web page to see the step budgets of one checkpoint side by side.

The model loads once; requests are served one at a time (a lock queues concurrent clicks). The
page is plain HTML and JavaScript from the standard library's HTTP server, no build step. Bad
requests get a 400 with a one-line message, failures a 500 with one line, never a traceback.

`playground`: the model and one request; `http`: the server and its limits; `page`: the page.
"""

from shortcut_models.serve.http import check_allowed_host, is_loopback, make_server
from shortcut_models.serve.playground import MAX_CLASS_NAMES, MAX_COUNT, Busy, Playground

__all__ = [
    "MAX_CLASS_NAMES",
    "MAX_COUNT",
    "Busy",
    "Playground",
    "check_allowed_host",
    "is_loopback",
    "make_server",
]
