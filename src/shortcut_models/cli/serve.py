"""A local web page for one checkpoint: pick the number of steps (two budgets side by side, on the
same noise), the class, the CFG scale and the seed, and see the samples and the milliseconds they
took. The model loads once; requests are served one at a time. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
from typing import Any

from shortcut_models.cli import args as a

SUMMARY = "a local web page to compare step budgets of a checkpoint side by side"


def register(subparsers: Any) -> None:
    p = a.command(subparsers, "serve", run, SUMMARY, __doc__)  # the docstring describes it
    a.add_paths(p, "run folder or checkpoint file", None)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=a.int_arg, default=8765, help="port (default 8765; 0: any)")
    p.add_argument("--raw", action="store_true", help="serve the raw weights instead of the EMA")
    a.add_device(p)


def run(args: argparse.Namespace) -> int:
    from shortcut_models.devices import resolve_device
    from shortcut_models.serve import Playground, make_server

    playground = Playground(args.ckpt, resolve_device(args.device), a.weights(args))
    server = make_server(playground, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.ckpt} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0
