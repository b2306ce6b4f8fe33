"""decode_sweep.py --compare: every candidate rule on several dumps, ranked by its worst shortfall
against each model's oracle best of ``segments N``. Built on hand-made dumps whose answers are known."""
from __future__ import annotations

import numpy as np

from benchmarks.decode_sweep import compare_dumps, sweep_dump


def _dump(path, spurious_wins: int):
    """A 2-object messy-style dump: object 1 renders as code 5 (wins 6 segments), object 2 as code 9
    (wins 6), and a spurious code 7 covers a third of object 2 in the test view and wins
    ``spurious_wins`` segments. Snapping 7 away (to 5, its nearest valid code by Hamming distance:
    0b111 -> 0b101) merges that third into the wrong object, keeping it makes a false segment."""
    pairs = [(v, 1, 5, 100) for v in range(6)] + [(v, 2, 9, 100) for v in range(6)]
    pairs += [(6 + v, 3, 7, 100) for v in range(spurious_wins)]
    view, seg, code, pix = (np.array(c, np.int32) for c in zip(*pairs))
    H, W = 30, 30
    gt_inst = np.zeros((H, W), np.int16)
    gt_inst[:, :15] = 1
    gt_inst[:, 15:] = 2
    codes = np.where(gt_inst == 1, 5, 9).astype(np.int16)
    codes[:, 25:] = 7  # a third of object 2
    np.savez(path, view=view, seg=seg, code=code, pixels=pix, gauss_codes=np.array([5, 7, 9]),
             gauss_counts=np.array([100, 30, 100]), test_codes=codes.reshape(-1),
             test_covered=np.ones(H * W, np.uint8), gt_sem=(gt_inst > 0).astype(np.int16).reshape(-1),
             gt_inst=gt_inst.reshape(-1), test_sem=(gt_inst > 0).astype(np.int16).reshape(-1),
             views=np.int64(6 + spurious_wins), num_gaussians=np.int64(230), thing_classes=np.array([1]),
             variant=np.array(["messy", "2", "False"]), variant_things=np.array([1]))
    return str(path)


def test_compare_ranks_rules_by_their_worst_shortfall(tmp_path):
    a, b = _dump(tmp_path / "a.npz", 2), _dump(tmp_path / "b.npz", 4)
    rows = {(r["rule"], r["knob"]): r for r in sweep_dump(a)}
    # with the spurious code kept (N <= 2) object 2 splits; with it snapped (N = 3) a third of it is merged
    assert rows[("segments", 1)]["valid_codes"] == 3 and rows[("segments", 3)]["valid_codes"] == 2
    # the vote's settings offline: every segment here has 100 pixels and one code
    assert rows[("segments[>= 16 px]", 2)]["valid_codes"] == rows[("segments", 2)]["valid_codes"] == 3
    assert rows[("segments[>= 256 px]", 2)]["valid_codes"] == 0
    assert rows[("segments[share 0.5]", 3)]["valid_codes"] == 2
    pq_keep, pq_drop = rows[("segments", 2)]["PQ_scene"], rows[("segments", 3)]["PQ_scene"]
    assert pq_keep != pq_drop
    table = compare_dumps([a, b])
    lines = [line for line in table.splitlines() if line.startswith("| segments ")]
    worst = [float(line.split("|")[-3]) for line in lines]
    assert worst == sorted(worst) and worst[0] == 0.0  # some N is the oracle best on both models
    row = next(line for line in lines if line.startswith("| segments 3 |"))
    rows_b = {(r["rule"], r["knob"]): r for r in sweep_dump(b)}
    best_a = max(r["PQ_scene"] for k, r in rows.items() if k[0] == "segments")
    best_b = max(r["PQ_scene"] for k, r in rows_b.items() if k[0] == "segments")
    expect = max(best_a - rows[("segments", 3)]["PQ_scene"], best_b - rows_b[("segments", 3)]["PQ_scene"])
    assert abs(float(row.split("|")[-3]) - expect) < 0.051
