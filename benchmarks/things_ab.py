"""Which Gaussians are things: the rules compared on one trained model (issue 9, extraction recall).

    python benchmarks/things_ab.py -m MODEL [--json out.json]

One pass over the training views (``segmentation.labels.label_votes``) gives every Gaussian its
blending weight on all pixels and on pixels the model's render decodes as things. Each rule below
turns that (and the Gaussian's own semantic feature) into thing/stuff; ids are the snapped codes
the PLY holds. Every rule is scored with ``tools/extraction_eval.measure_extraction`` against the
generator's exact geometry (surface and box references), without and with the default stray filter:

- own: the Gaussian's own semantic feature (the rule before the vote);
- vote: the vote where the Gaussian is seen (>= 1 pixel of weight), else own;
- vote_fill: the vote; unseen Gaussians take the majority decision of their 8 nearest seen ones;
- union: own, or the vote of a seen Gaussian (a thing when either says so; the default until 12b);
- union_fill (``ThingVotes.fill_unseen``): union for seen Gaussians; an unseen one
  takes the majority id of its 8 nearest seen Gaussians (by their union decision), or its own code when
  they say stuff and its own feature says thing;
- union_rescue (``visibility.rescue_stuff``): union, then a stuff Gaussian whose own (snapped) code is the
  majority id of its 8 nearest thing Gaussians (at least 5 of them, all within the stray filter's radius),
  and at least a tenth of whose weight in the masked views fell on the input masks' object pixels, becomes
  a thing of that id: object surface the fg/bg decision missed, recognised by its code, its place and the
  masks;
- union_fill_rescue: union_fill, then the rescue;
- union_fill_masks (train.py's default): union_fill, then a seen Gaussian that only its own feature calls a
  thing (its pixels render as stuff) stays one only when at least a quarter of its weight in the masked
  views fell on the masks' object pixels (``ThingVotes.disputed``), then the rescue;
- union_fill_rescue_ungated: union_fill, then the rescue as measured in RESULTS.md 13b (half that radius,
  no mask gate). ``benchmarks/rescue_gates.py`` scores more variants from ``--dump``.

Then, for one rule (``--diagnose``, default train.py's), where its precision goes (``outside``: the
extracted opacity outside each object's grown box, split into stuff surfaces, other objects' surfaces
and floaters; unseen Gaussians, things by their own feature only, rescued ones) and where its recall goes
(``stuff_on_surfaces``: object surface still labelled stuff, unseen or seen). ``--rules`` scores a subset
(the diagnosis always runs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


RULES = ("own", "vote", "vote_fill", "union", "union_fill", "union_rescue", "union_fill_rescue",
         "union_fill_masks", "union_fill_rescue_ungated")


def outside_mass(ids, means, opac, scales, boxes, pts, inst, seen, own, vote, filled) -> dict:
    """Where the precision goes: of the opacity ``extract`` returns (stray filter on) for each matched
    object, the share outside the object's box grown by GROW, and what that outside part is: Gaussians
    within SURFACE_TOL of a stuff surface, of another object's surface, or of none (floaters); unseen
    ones; things by their own feature only (the vote said stuff); rescued ones (stuff for ``filled``,
    the union_fill rule's thing decisions)."""
    from scipy.spatial import cKDTree

    from tools import extraction_eval as ev
    from tools.objects import default_radius, stray_filter

    keep = stray_filter(ids, means, opac, radius=default_radius(means, ids, scales=scales)).numpy()
    ids_np, w = ids.numpy(), opac.double().numpy()
    P = means.to(torch.float64).numpy()
    g0, o0 = ev.box_pairs(P, boxes, 0.0)  # the evaluator's matching: most thing opacity inside the box
    L = int(ids_np.max(initial=0)) + 1
    th = ids_np[g0] > 0
    mass = np.bincount(o0[th] * L + ids_np[g0[th]], weights=w[g0[th]], minlength=len(boxes) * L)
    mass = mass.reshape(len(boxes), L)
    matched = np.where(mass.max(1) > 0, mass.argmax(1), -1)  # [K]
    g, o = ev.box_pairs(P, boxes, ev.GROW)
    inside = np.zeros(len(P), bool)
    sel = (ids_np[g] == matched[o]) & (matched[o] > 0)
    inside[g[sel]] = True
    ext = keep & (ids_np > 0) & np.isin(ids_np, matched[matched > 0])
    outside = ext & ~inside
    d, j = cKDTree(pts).query(P[outside], k=1, workers=-1)
    near, owner = d <= ev.SURFACE_TOL, inst[j]
    wo = w[outside]
    total = max(float(wo.sum()), 1e-12)

    def share(mask) -> float:
        return float(wo[mask].sum()) / total

    seen_o, own_o, vote_o = seen.numpy()[outside], own.numpy()[outside], vote.numpy()[outside]
    rescued_o = ~filled.numpy()[outside]
    return {"share": total / max(float(w[ext].sum()), 1e-12), "near_stuff": share(near & (owner == 0)),
            "near_other_object": share(near & (owner > 0)), "floaters": share(~near), "unseen": share(~seen_o),
            "own_only": share(own_o & seen_o & ~vote_o), "rescued": share(rescued_o)}


def main(argv=None) -> int:
    from arguments import load_cfg_args
    from scene.dataset_readers import read_scene_for
    from scene.gaussian_model import feature_of
    from scene.model_folder import find_iteration, load_model
    from segmentation.labels import (DEFAULT_THING_RULE, gaussian_label_columns, label_votes, load_semantic_decoder,
                                     semantic_classes, thing_mask, training_views)
    from segmentation.visibility import (DEFAULT_RESCUE_MASK_SHARE, DEFAULT_RESCUE_RADIUS_FACTOR, fill_unseen,
                                         object_radius, rescue_stuff)
    from tools import extraction_eval as ev
    from tools.objects import default_radius, stray_filter
    from utils.general_utils import pick_device

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model_path", required=True)
    ap.add_argument("--iteration", type=int, default=-1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rules", nargs="+", default=None, choices=RULES, help="score only these rules (default: all)")
    ap.add_argument("--dump", default=None,
                    help="also write the rescue's inputs for benchmarks/rescue_gates.py (npz, with the object "
                         "boxes)")
    ap.add_argument("--diagnose", default=DEFAULT_THING_RULE, choices=RULES[3:],
                    help="the rule whose precision and recall losses are broken down (default: train.py's)")
    args = ap.parse_args(argv)
    M = args.model_path
    cfg = load_cfg_args(M)
    it = find_iteration(M, args.iteration)
    info = read_scene_for(cfg, allow_missing_masks=True)
    dev = pick_device("auto")
    model = load_model(M, it, dev)
    folder = os.path.join(M, "point_cloud", f"iteration_{it}")
    decoder = load_semantic_decoder(folder, dev) if getattr(cfg, "semantic_head", "logits") == "embed" else None
    t = time.time()
    votes, tv = label_votes(model, training_views(cfg, info, dev),
                            sigmoid_where=getattr(cfg, "sigmoid_where", "rendered"),
                            thing_classes=info.thing_classes, decoder=decoder, backend=getattr(cfg, "backend", "auto"))
    t_vote = time.time() - t
    if tv is None:
        print("model has no semantic head: every Gaussian is a thing; nothing to compare")
        return 0
    codes = gaussian_label_columns(model, (), valid=votes.valid())["instance_label"].cpu()  # [N] code + 1
    own = thing_mask(semantic_classes(feature_of(model, "semantic").detach(), decoder), info.thing_classes).cpu()
    seen = (tv.seen >= 1.0).cpu()
    vote = tv.decide(own.to(tv.seen.device), rule="vote").cpu()
    means = model.get_means().detach().cpu()
    opac = model.get_opacities().detach().reshape(-1).cpu()
    scales = model.get_scales().detach().cpu()
    filled = fill_unseen(vote.to(torch.int64), means, tv.seen.cpu()).bool()
    union = tv.decide(own.to(tv.seen.device), rule="union").cpu()
    rules = {"own": own, "vote": vote, "vote_fill": filled, "union": union}
    ids_u = torch.where(union, codes, torch.zeros_like(codes))
    rule_ids = {"union": ids_u}
    r_rescue = object_radius(means, ids_u, DEFAULT_RESCUE_RADIUS_FACTOR, scales=scales)
    share = tv.mask_share()
    allowed = None if share is None else share.cpu() >= DEFAULT_RESCUE_MASK_SHARE
    ids_r = rescue_stuff(ids_u, codes, means, r_rescue, allowed=allowed)  # without the fill (not a library rule)
    rules["union_rescue"], rule_ids["union_rescue"] = ids_r > 0, ids_r
    for name in ("union_fill", "union_fill_rescue", "union_fill_masks"):  # the library's rules, exactly as train.py saves them
        ids = gaussian_label_columns(model, info.thing_classes, decoder=decoder, valid=votes.valid(), thing_votes=tv,
                                     thing_rule=name, semantic_masks=not info.semantic_from_instances)
        ids = ids["instance_label"].cpu()
        rules[name], rule_ids[name] = ids > 0, ids
    ids_f = rule_ids["union_fill"]
    r_fill = object_radius(means, ids_f, 4.0, scales=scales)
    ids_w = rescue_stuff(ids_f, codes, means, r_fill)  # the rescue of 13b: radius factor 4, no gate
    rules["union_fill_rescue_ungated"], rule_ids["union_fill_rescue_ungated"] = ids_w > 0, ids_w
    ids_fr = rule_ids[args.diagnose]
    scene = cfg.source_path
    boxes = ev.load_boxes(scene)
    pts, inst = ev.surface_samples(ev.scene_mesh(scene))
    owner = ev.surface_owner(means.to(torch.float64).numpy(), pts, inst, ev.SURFACE_TOL)
    rows, out = [], {"model": M, "iteration": it, "gaussians": int(own.numel()), "seen": int(seen.sum()),
                     "vote_seconds": round(t_vote, 1), "rules": {}}
    for name, things in rules.items():
        if args.rules and name not in args.rules:
            continue
        ids = rule_ids.get(name, torch.where(things, codes, torch.zeros_like(codes)))
        keep = stray_filter(ids, means, opac, radius=default_radius(means, ids, scales=scales))
        res = {}
        for ref, kw in (("surface", {"inner": ev.SURFACE_TOL, "owner": owner}), ("box", {"inner": ev.INNER})):
            for sel, kept in (("all", ids > 0), ("filtered", keep)):
                r = ev.measure_extraction(ids, kept, means, opac, boxes, grow=ev.GROW, **kw)
                res[f"{ref}/{sel}"] = {"P": r.median_precision, "R": r.median_recall, "unmatched": r.unmatched,
                                       "missed": r.missed}
        out["rules"][name] = {"thing_gaussians": int(things.sum()), **res}
        s, f = res["surface/all"], res["surface/filtered"]
        b = res["box/filtered"]
        rows.append(f"| {name} | {int(things.sum())} | {s['P']:.3f} / {s['R']:.3f} | {f['P']:.3f} / {f['R']:.3f} | "
                    f"{b['P']:.3f} / {b['R']:.3f} | {f['unmatched']} | {100 * f['missed'].get('stuff', 0):.1f} % |")
    out["diagnosed"] = args.diagnose
    out["outside"] = outside_mass(ids_fr, means, opac, scales, boxes, pts, inst, seen, own, vote, ids_f > 0)
    o = out["outside"]
    print(f"{args.diagnose} + stray filter, extracted opacity outside its object's box + {ev.GROW} m: {100 * o['share']:.1f} %; "
          f"of that: {100 * o['near_stuff']:.1f} % on stuff surfaces, {100 * o['near_other_object']:.1f} % on other "
          f"objects, {100 * o['floaters']:.1f} % floaters; {100 * o['unseen']:.1f} % unseen, "
          f"{100 * o['own_only']:.1f} % seen, things by their own feature though the vote says stuff, "
          f"{100 * o['rescued']:.1f} % rescued")
    # what the default rule still labels stuff on the objects' surfaces: hidden Gaussians (their own feature
    # decides) or seen ones whose pixels render as stuff
    ref = np.isin(owner, np.asarray(boxes.ids))  # [N] within the tolerance of an object's own surface
    w = opac.double().numpy()
    stuff = ~(ids_fr > 0).numpy() & ref
    total = float(w[ref].sum())
    unseen_mass = float(w[stuff & ~seen.numpy()].sum())
    seen_mass = float(w[stuff & seen.numpy()].sum())
    out["stuff_on_surfaces"] = {"unseen": unseen_mass / max(total, 1e-12), "seen": seen_mass / max(total, 1e-12)}
    print(f"{M}: {out['gaussians']} Gaussians, {out['seen']} seen (>= 1 px); vote pass {t_vote:.1f} s")
    print(f"{args.diagnose}, surface opacity still labelled stuff: {100 * unseen_mass / max(total, 1e-12):.1f} % unseen "
          f"(own feature decides), {100 * seen_mass / max(total, 1e-12):.1f} % seen but rendered as stuff")
    print("| rule | thing Gaussians | surface, every Gaussian: P / R | surface, stray filter: P / R | box, stray filter: P / R | unmatched | missed as stuff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if args.dump:
        from benchmarks.rescue_gates import write_dump

        out["dump"] = write_dump(args.dump, ids_fill=ids_f, codes=codes, means=means, opac=opac,
                                 scales=scales, votes=tv, boxes=boxes, own=own)
        print(f"rescue dump: {out['dump']['kept']} of {out['dump']['of']} Gaussians, {out['dump']['bytes'] / 2**20:.1f} MiB in three files "
              f"-> {args.dump}")
        if out["dump"]["largest_file"] > 15 * 2**20:
            print(f"warning: a file of the rescue dump holds {out['dump']['largest_file'] / 2**20:.1f} MiB; the device "
                  f"machine returns files of at most 16 MiB", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
