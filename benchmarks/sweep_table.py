"""Markdown table of a sweep folder (benchmarks/sweep_open_choices.sh): one row per run.

    python benchmarks/sweep_table.py OUTDIR [--baseline default]
"""
from __future__ import annotations

import argparse
import json
import os


def rows(outdir: str, baseline: str):
    out = []
    names = sorted(n for n in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, n)))
    base = None
    for name in names:
        res = os.path.join(outdir, name, "results.json")
        stats = os.path.join(outdir, name, "train_stats.json")
        if not os.path.isfile(res):
            state = "training" if not os.path.isfile(stats) else "rendering / evaluating"
            out.append((name, None, state))
            continue
        with open(res) as f:
            r = next(iter(json.load(f).values()))
        with open(stats) as f:
            st = json.load(f)
        snaps = {}
        for fn in sorted(os.listdir(os.path.join(outdir, name))):
            if fn.startswith("results_snap") and fn.endswith(".json"):
                with open(os.path.join(outdir, name, fn)) as f:
                    snaps[fn[len("results_snap"):-5]] = next(iter(json.load(f).values())).get("PQ_scene")
        out.append((name, {**r, **st, "snaps": snaps}, ""))
        if name == baseline:
            base = r.get("PQ_scene")
    return out, base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--baseline", default="default")
    a = ap.parse_args()
    table, base = rows(a.outdir, a.baseline)
    print("| run | PQ^scene | ΔPQ | SQ | RQ | mIoU | PSNR | Gaussians | train s | cluster s | PQ^scene with snap K |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    nan = float("nan")
    for name, r, state in table:
        if r is None:
            print(f"| {name} | ({state}) | | | | | | | | | |")
            continue
        pq = r.get("PQ_scene", nan)
        d = f"{pq - base:+.1f}" if base is not None else ""
        print(f"| {name} | {pq:.1f} | {d} | {r.get('SQ_scene', r.get('SQ', nan)):.1f} | "
              f"{r.get('RQ_scene', r.get('RQ', nan)):.1f} | {r.get('mIoU', nan):.1f} | {r.get('PSNR', nan):.2f} | "
              f"{r['num_gaussians']} | {r['train_seconds']:.0f} | {r.get('cluster_seconds', 0):.0f} | "
              + ", ".join(f"K={k}: {v:.1f}" for k, v in sorted(r["snaps"].items(), key=lambda kv: int(kv[0])))
              + " |")


if __name__ == "__main__":
    main()
