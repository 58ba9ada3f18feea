"""``transcoders serve``: start the local viewer."""

from __future__ import annotations

import argparse

from .common import add_command, loading


def _serve(ns: argparse.Namespace) -> int:
    with loading(ns):
        from ..viewer import make_server, new_token

    token = new_token() if ns.token == "auto" else (ns.token or None)  # make_server refuses a public host without one
    server = make_server(ns.runs_dir, ns.host, ns.port, token, verbose=ns.verbose)
    host, port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"transcoders viewer: {url}  (runs folder {server.root}; Ctrl-C to stop)", flush=True)
    if token:
        print("access token required: open the URL above once (it sets a cookie), or send 'Authorization: Bearer TOKEN'",
              flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    s = add_command(
        sub, "serve", func=_serve,
        help="local web viewer: runs, sweeps, feature pages, labels, blind rating, circuit graphs",
        description="Serve a web viewer over a runs folder: runs and sweeps (with their Pareto plots), feature pages "
        "(highlighted top and quantile examples, histogram, density, logit effects, de-embeddings; needs `transcoders "
        "features RUN`), labels you give features, a blind rating session comparing two runs, and circuit graphs from "
        "`transcoders circuit`. Every asset is served locally; nothing is fetched from another host. It listens on "
        "127.0.0.1 unless --host says otherwise, and any other host needs an access token.",
        examples=["transcoders serve                       # runs/ on http://127.0.0.1:8041/",
                  "transcoders serve runs --port 9000",
                  "transcoders serve runs --host 0.0.0.0 --token auto   # reachable from the network, with a printed token"],
    )
    s.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR", help="folder holding runs (default: %(default)s)")
    s.add_argument("--port", type=int, default=8041, help="port (default: %(default)s; 0 picks a free one)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    s.add_argument("--token", default="", help="access token; 'auto' generates one (required with a non-loopback --host)")
    s.add_argument("--verbose", action="store_true", help="log every request")
