"""A local web page for one checkpoint: pick the number of steps (two budgets side by side, on the
same noise), the class, the CFG scale and the seed, and see the samples and the milliseconds they
took. The model loads once; requests are served one at a time. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shortcut_models.cli import args as a

SUMMARY = "a local web page to compare step budgets of a checkpoint side by side"


def register(subparsers: Any) -> None:
    p = a.command(subparsers, "serve", run, SUMMARY, __doc__)  # the docstring describes it
    a.add_paths(p, "run folder or checkpoint file", None)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_arg, default=8765, help="port (default 8765; 0: any)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        type=allowed_host_arg,
        metavar="NAME",
        help="also answer requests whose Host header is NAME (the name other machines use; only "
        "localhost, 127.0.0.1, [::1] and --host are answered otherwise); repeatable",
    )
    p.add_argument("--raw", action="store_true", help="serve the raw weights instead of the EMA")
    a.add_device(p)


def allowed_host_arg(text: str) -> str:
    """An --allow-host NAME: a host name or address, no port."""
    from shortcut_models.errors import UsageError
    from shortcut_models.serve import check_allowed_host

    try:
        return check_allowed_host(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--allow-host ")) from None


def port_arg(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    port = a.int_arg(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def run(args: argparse.Namespace) -> int:
    from shortcut_models.devices import resolve_device
    from shortcut_models.serve import Playground, is_loopback, make_server

    playground = Playground(args.ckpt, resolve_device(args.device), a.weights(args))
    server = make_server(playground, args.host, args.port, args.allow_host)
    if not is_loopback(args.host):
        where = "every interface" if args.host in ("", "0.0.0.0", "::") else args.host
        print(
            f"warning: listening on {where}: other machines can reach this page; they are "
            "answered only under the Host names --allow-host adds",
            file=sys.stderr,
            flush=True,
        )
    host, port = server.server_address[:2]
    print(f"serving {args.ckpt} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0
