"""Browse a trained model in the web browser: splats coloured by RGB, object or class; click an
object to see its id, class, size and centroid; isolate, hide or export it; see the training cameras.

    python view.py -m output/room10 [--port 8080] [--host 127.0.0.1] [--max_splats 1000000]

Then open http://127.0.0.1:8080 (Ctrl-C stops the server). Needs viser (pip install -e ".[viewer]");
works without a GPU (the browser draws the splats). Bad input (missing model, a port in use)
prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

from tools import objects


def build_parser() -> argparse.ArgumentParser:
    from viewer.data import DEFAULT_MAX_SPLATS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model_path", required=True, help="trained model folder (train.py -m)")
    p.add_argument("--iteration", type=int, default=-1, help="saved iteration; -1 = latest")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    p.add_argument("--max_splats", type=int, default=DEFAULT_MAX_SPLATS,
                   help="show a random subset of this many Gaussians above it (the page says so; 0: all)")
    p.add_argument("--min_gaussians", type=int, default=50, help="ids smaller than this stay out of the object list")
    p.add_argument("--keep_strays", action="store_true",
                   help="an object is every Gaussian of its id (no stray filter; as tools/objects.py)")
    p.add_argument("--export_dir", default=None, help="where exports go (default MODEL/exports)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from viewer.app import Viewer, ViewerError, start_server, check_port
    from viewer.data import load_viewer_data

    server = None
    try:
        check_port(args.host, args.port)  # fail before the (slow) load
        if os.path.isdir(args.model_path):  # else load_viewer_data's one-line error is all the output
            print(f"loading {args.model_path} ...", flush=True)
        data = load_viewer_data(args.model_path, args.iteration, max_splats=args.max_splats,
                                min_gaussians=args.min_gaussians, strays=objects.StrayFilter(keep=args.keep_strays))
        server = start_server(args.host, args.port)
        Viewer(data, server, export_dir=args.export_dir)
    except (ViewerError, objects.ObjectsError, OSError) as e:
        if server is not None:
            server.stop()
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in data.notes:
        print(f"note: {note}")
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    n = len(data.listed())
    print(f"viewer: http://{host}:{server.get_port()}  ({data.num_gaussians:,} Gaussians, {n} object"
          f"{'' if n == 1 else 's'}; Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
