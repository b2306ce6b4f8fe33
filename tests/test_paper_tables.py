"""benchmarks/paper_tables.py: the jobs each table plans, scene generation bookkeeping, and the
table + figure written from runs (fake stages, as in test_benchmark_driver)."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import paper_tables as pt
from benchmarks.run_suite import REPO

pytest.importorskip("matplotlib")

# A fake stage: PQ depends on the variant, the object count in the scene name and the seed, so
# the table's mean ± std and the figure's points can be checked.
FAKE_STAGE = r"""
import json, os, re, sys
stage, model = sys.argv[1], sys.argv[2]
os.makedirs(model, exist_ok=True)
with open(os.path.join(model, "calls.txt"), "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\n")
variant, seed = re.fullmatch(r"(.+)-seed(\d+)", os.path.basename(model)).groups()
objects = int(os.path.basename(os.path.dirname(model)).split("_")[-5])
pq = (80.0 if variant == "unic" else 60.0) - objects / 10 + 2 * int(seed)
if stage == "train":
    json.dump({"train_seconds": 600.0, "cluster_seconds": 120.0 if variant == "contrastive_lift" else 0.0,
               "cluster_tune_seconds": 240.0 if variant == "contrastive_lift" else None,
               "peak_gpu_mem_mb": 2048.0, "iterations": 30, "device": "FakeGPU"},
              open(os.path.join(model, "train_stats.json"), "w"))
if stage == "metrics":
    json.dump({"ours_30": {"PSNR": 25.0, "PQ_scene": pq, "mIoU": pq - 5}}, open(os.path.join(model, "results.json"), "w"))
"""


def fake_commands(job):
    return {s: [sys.executable, "-c", FAKE_STAGE, s, job.model_path] for s in ("train", "render", "metrics")}


def fake_make(made):
    def make(specs, scenes_dir, workers, log):
        for sc in specs:
            os.makedirs(os.path.join(scenes_dir, sc.name), exist_ok=True)
            made.append(sc.name)
    return make


def _args(tmp_path, *extra):
    return pt.parse_args([*extra, "--runs", str(tmp_path / "runs"), "--scenes_dir", str(tmp_path / "scenes")])


def test_tables_plan_the_right_jobs(tmp_path):
    args = _args(tmp_path, "tab1")
    spec = pt.table_spec(args, "tab1")
    jobs = pt.table_jobs(args, spec)
    assert len(jobs) == 16 and {j.method for j in jobs} == {"unic", "contrastive_lift"}
    assert sorted({pt.scene_of(spec, j.name).objects for j in jobs}) == [25, 50, 100, 500]
    assert {pt.scene_of(spec, j.name).layout for j in jobs} == {"old_room", "large_corridor"}
    assert all(pt.scene_of(spec, j.name).format == "messy" for j in jobs)
    # a timing table: its own run folder, one job per GPU whatever was asked
    assert all(os.sep + "runs_alone" + os.sep in j.model_path for j in jobs)
    assert pt.jobs_per_gpu(_args(tmp_path, "tab1", "--jobs_per_gpu", "4"), spec) == 1
    # tab4: the paper's six variants, two seeds, one Replica-like scene at 640x480
    a4 = _args(tmp_path, "tab4", "--jobs_per_gpu", "4")
    jobs4 = pt.table_jobs(a4, pt.table_spec(a4, "tab4"))
    assert [(j.method, j.seed) for j in jobs4[:2]] == [("cl_only", 0), ("cl_only", 1)] and len(jobs4) == 12
    assert jobs4[0].name == "replica_like_40_s2_640x480_300v_panopli"
    assert pt.jobs_per_gpu(a4, pt.table_spec(a4, "tab4")) == 4
    # tab2 shares its unic run with tab4 (same folder), not with the timing table tab5
    j2 = {j.model_path for j in pt.table_jobs(a4, pt.table_spec(a4, "tab2"))}
    j5 = {j.model_path for j in pt.table_jobs(a4, pt.table_spec(a4, "tab5"))}
    assert {j.model_path for j in jobs4} & j2 and not j2 & j5
    # --iterations scales Tab. 6's L_3D start; --size / --views rename the scenes
    a6 = _args(tmp_path, "tab6", "--iterations", "10000", "--size", "480x360", "--views", "100")
    assert pt.variant_flags("l3d_12k", 10000)[-2:] == ["--l3d_from_iter", "4000"]
    assert pt.variant_flags("l3d_12k", None)[-1] == "12000" and pt.variant_flags("unic", 5000) == ["--method", "unic"]
    assert pt.table_jobs(a6, pt.table_spec(a6, "tab6"))[0].model_path.startswith(
        str(tmp_path / "runs" / "runs" / "it10000" / "replica_like_40_s2_480x360_100v_panopli"))
    # --variants: only those rows are planned, in the table's order
    av = _args(tmp_path, "tab4", "--variants", "unic", "all_noW")
    assert [(j.method, j.seed) for j in pt.table_jobs(av, pt.table_spec(av, "tab4"))] == [
        ("all_noW", 0), ("all_noW", 1), ("unic", 0), ("unic", 1)]
    # --noise / --objects: a harder ablation room, named apart; tab1 keeps its own counts
    ah = _args(tmp_path, "tab4", "--noise", "hard", "--objects", "100", "--size", "480x360", "--views", "186")
    (hard,) = pt.table_spec(ah, "tab4")["scenes"]
    assert hard.name == "replica_like_100_s2_480x360_186v_panopli_hard"
    assert hard.command("/x", 2)[hard.command("/x", 2).index("--noise") + 1] == "hard"
    assert pt.table_jobs(ah, pt.table_spec(ah, "tab4"))[0].name == hard.name
    assert sorted({sc.objects for sc in pt.table_spec(_args(tmp_path, "tab1", "--noise", "hard"), "tab1")["scenes"]}) \
        == [25, 50, 100, 500]
    a1 = _args(tmp_path, "tab1", "--objects", "25", "100")  # tab1 split over sessions: some of its counts
    assert [(sc.layout, sc.objects) for sc in pt.table_spec(a1, "tab1")["scenes"]] == [
        ("old_room", 25), ("old_room", 100), ("large_corridor", 25), ("large_corridor", 100)]
    a5 = _args(tmp_path, "tab5", "--scene_seeds", "3", "4")  # the scenes a lease did not reach
    assert [sc.seed for sc in pt.table_spec(a5, "tab5")["scenes"]] == [3, 4]
    assert len(pt.table_jobs(a5, pt.table_spec(a5, "tab5"))) == 4  # 2 scenes x 2 methods x 1 seed
    # the scene command is the generator's CLI
    cmd = pt.MESSY_SCENES[-1].command("/x", 3)
    assert cmd[1].endswith(os.path.join("tools", "make_scene.py"))
    assert cmd[2:] == ["--out", "/x", "--layout", "large_corridor", "--objects", "500", "--seed", "1", "--size",
                       "512x512", "--views", "200", "--format", "messy", "--noise", "realistic", "--workers", "3",
                       "--quiet"]


def test_estimate_counts_runs_and_shares(tmp_path, capsys):
    args = _args(tmp_path, "all", "--iterations", "10000", "--jobs_per_gpu", "4")
    e = pt.estimate(args, pt.table_spec(args, "tab4"))
    # 12 runs at 640x480, 10k iterations, 4 side by side: 12 x (1.5 x 1.78 + 0.5) x (1 + 3 x 0.8) / 4
    assert (pt.MIN_PER_10K_ALONE, pt.SIDE_BY_SIDE_SLOWDOWN, pt.EVAL_MIN) == (1.5, 0.8, 0.5)
    assert e["runs"] == 12 and e["gpu_minutes"] == pytest.approx(12 * (1.5 * 640 * 480 / 172800 + 0.5) * 3.4 / 4)
    total = pt.print_estimate(sorted(pt.TABLES), args)
    out = capsys.readouterr().out
    assert "| tab1 | 8 x 2 x 1 | 16 | 10000 | 1 |" in out and "distinct runs" in out
    assert total < sum(pt.estimate(args, pt.table_spec(args, n))["gpu_minutes"] for n in pt.TABLES)


def test_make_scenes_generates_missing_ones_atomically(tmp_path):
    calls = []

    def fake_run(cmd, **kw):
        out = cmd[cmd.index("--out") + 1]
        calls.append(out)
        assert out.endswith(".partial")
        os.makedirs(out)
        if "--objects" in cmd and cmd[cmd.index("--objects") + 1] == "13":
            return subprocess.CompletedProcess(cmd, 2, "", "make_scene: bad thing\n")
        open(os.path.join(out, "generator.json"), "w").write("{}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    specs = pt.MESSY_SCENES[:2]
    stale = tmp_path / specs[1].name
    os.makedirs(stale)  # an interrupted earlier write: no generator.json
    made = pt.make_scenes(specs, str(tmp_path), log=lambda m: None, run=fake_run)
    assert [os.path.basename(m) for m in made] == [s.name for s in specs]
    assert all(os.path.isfile(tmp_path / s.name / "generator.json") for s in specs)
    assert pt.make_scenes(specs, str(tmp_path), log=lambda m: None, run=fake_run) == [] and len(calls) == 2
    with pytest.raises(SystemExit, match="make_scene.py failed for old_room_13.*bad thing"):
        pt.make_scenes([pt.messy("old_room", 13, 0)], str(tmp_path), log=lambda m: None, run=fake_run)


def test_scenes_only_generates_several_at_once_and_runs_nothing(tmp_path, monkeypatch, capsys):
    """--scenes_only --scene_jobs 3: the table's missing scenes, three generations in flight together (a
    barrier that three callers must reach before any returns), then exit without training."""
    import threading

    barrier = threading.Barrier(3, timeout=20)

    def fake_run(cmd, **kw):
        barrier.wait()  # raises BrokenBarrierError unless three generations overlap
        out = cmd[cmd.index("--out") + 1]
        os.makedirs(out)
        open(os.path.join(out, "generator.json"), "w").write("{}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(pt.subprocess, "run", fake_run)
    monkeypatch.setattr(pt, "run_table", lambda *a, **k: pytest.fail("--scenes_only must not train"))
    scenes = tmp_path / "scenes"
    assert pt.main(["tab1", "--objects", "25", "100", "500", "--scenes_only", "--scene_jobs", "3",
                    "--scenes_dir", str(scenes)]) == 0
    names = sorted(p.name for p in scenes.iterdir())
    assert len(names) == 6 and all(n.endswith("messy") for n in names) and not any("_50_" in n for n in names)
    assert "6 scene(s) generated, 0 already there" in capsys.readouterr().out


def test_tab1_runs_then_writes_table_and_figure(tmp_path):
    args = _args(tmp_path, "tab1", "--seeds", "0", "1", "--out", str(tmp_path / "t1"),
                 "--figure", str(tmp_path / "docs" / "tab1.png"), "--jobs_per_gpu", "2")
    made, msgs = [], []
    results = pt.run_table("tab1", args, log=msgs.append, commands=fake_commands, make=fake_make(made))
    assert len(made) == 8 and len(results["runs"]) == 32 and all(r["status"] == "ok" for r in results["runs"])
    assert any("timing table, one run per GPU" in m for m in msgs)
    md = open(tmp_path / "t1" / "table.md").read()
    assert md.startswith("## Tab. 1 analogue") and "commit " in md and "FakeGPU" in md
    assert "| 3DGS optimisation (s) | Clustering (s) | min_cluster_size tuning (s) | Peak GPU mem (GB) |" in md
    # unic at 25 objects: 77.5 and 79.5 over the two seeds -> 78.5 ± 1.4; 10 min training, no clustering
    assert "| old_room_25_s0_512x512_200v_messy | unic | 78.5 ± 1.4 | 73.5 ± 1.4 | 600 ± 0 | 0 ± 0 | - |" \
           " 2.00 ± 0.00 | 2/2 |" in md
    assert "| large_corridor_500_s1_512x512_200v_messy | contrastive_lift | 11.0 ± 1.4 |" in md
    table = json.load(open(tmp_path / "t1" / "table.json"))
    assert table["table"] == "tab1" and len(table["rows"]) == 16 and table["config"]["seeds"] == [0, 1]
    assert os.path.getsize(tmp_path / "docs" / "tab1.png") > 10_000
    assert json.load(open(tmp_path / "t1" / "results.json"))["config"]["jobs_per_gpu"] == 1
    # --collect: nothing runs, the same table comes back from the model folders
    calls = sum(1 for j in pt.table_jobs(args, pt.table_spec(args, "tab1"))
                for _ in open(os.path.join(j.model_path, "calls.txt")))
    os.remove(tmp_path / "t1" / "table.md")
    collect = _args(tmp_path, "tab1", "--seeds", "0", "1", "--out", str(tmp_path / "t1"), "--collect",
                    "--figure", str(tmp_path / "docs" / "tab1.png"))
    pt.run_table("tab1", collect, log=lambda m: None, commands=fake_commands, make=fake_make(made))
    assert open(tmp_path / "t1" / "table.md").read() == md and len(made) == 8
    assert calls == sum(1 for j in pt.table_jobs(args, pt.table_spec(args, "tab1"))
                        for _ in open(os.path.join(j.model_path, "calls.txt")))


def test_a_run_into_its_own_folder_leaves_the_published_figure_alone(tmp_path):
    """Session 23's 500-object CPU smoke run (--out, -- --resolution 4) redrew docs/tab1.png from 50 iterations.
    Without --figure, a run with --out or train.py flags draws into its own folder; only a run as documented
    draws docs/<table>.png, and --figure still wins."""
    docs = os.path.join(pt.rs.REPO, "docs", "tab1.png")
    assert pt.default_figure("tab1", pt.parse_args(["tab1"]), "output/paper/tab1") == docs
    own = pt.parse_args(["tab1", "--out", str(tmp_path / "t1")])
    assert pt.default_figure("tab1", own, str(tmp_path / "t1")) == str(tmp_path / "t1" / "tab1.png")
    smoke = pt.parse_args(["tab1", "--iterations", "50", "--", "--resolution", "4"])
    assert pt.default_figure("tab1", smoke, "output/paper/tab1") == os.path.join("output/paper/tab1", "tab1.png")
    before = os.path.getmtime(docs) if os.path.exists(docs) else None
    args = _args(tmp_path, "tab1", "--seeds", "0", "--objects", "25", "--out", str(tmp_path / "t1"))
    assert args.figure is None
    pt.run_table("tab1", args, log=lambda m: None, commands=fake_commands, make=fake_make([]))
    assert os.path.getsize(tmp_path / "t1" / "tab1.png") > 10_000
    assert (os.path.getmtime(docs) if os.path.exists(docs) else None) == before


@pytest.mark.parametrize("name", ["tab5", "fig9", "tab4"])
def test_every_figure_kind_is_drawn_from_results(tmp_path, name):
    """stacked time bars (tab5), a line over mask fraction (fig9), grouped bars (tab4), from a fake
    results.json; a failed run shows in the table and leaves its point out."""
    spec = pt.TABLES[name]
    runs = []
    for i, v in enumerate(spec["variants"]):
        for sc in spec["scenes"]:
            for seed in spec["seeds"]:
                runs.append({"scene": sc.name, "method": v, "seed": seed, "status": "ok", "PQ_scene": 50.0 + i + seed,
                             "mIoU": 40.0, "train_seconds": 900.0, "cluster_seconds": 60.0 * (v == "contrastive_lift"),
                             "cluster_tune_seconds": 200.0 if v == "contrastive_lift" else None, "device": "FakeGPU"})
    runs[0] = dict(runs[0], status="failed", error="train failed (exit 1)", PQ_scene=None)
    results = {"config": {"finished": "2026-12-01T10:00:00", "commit": "abc1234", "seeds": spec["seeds"],
                          "iterations": 30000, "jobs_per_gpu": 1, "scenes": [sc.name for sc in spec["scenes"]]},
               "runs": runs}
    fig = str(tmp_path / f"{name}.png")
    written = pt.write_outputs(name, spec, results, str(tmp_path / name), fig)
    md = written["markdown"]
    assert "2026-12-01; device: FakeGPU; commit abc1234; 30000 iterations; images 640x480; seeds" in md
    assert "(train failed (exit 1))" in md
    if name == "tab5":
        assert "| contrastive_lift | 900 | 60 | 200 | 960 | 51.0 | 40.0 | 1/1 |" in md  # one seed: no ±; total = 900 + 60 s
    assert os.path.getsize(fig) > 10_000
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_cli_errors_and_dry_run(tmp_path):
    script = os.path.join(REPO, "benchmarks", "paper_tables.py")
    for bad, what in ((["tab1", "--size", "big"], "--size big"), (["all", "--out", "x"], "give a table, not all"),
                      (["tab4", "--engine", "ray", "--gpus", "0"], "--gpus is for --engine local"),
                      (["tab4", "--variants", "unic", "l3d_7k"], "--variants l3d_7k: not a row of tab4 (its rows:"),
                      (["all", "--variants", "unic"], "give a table, not all"),
                      (["tab1", "--objects", "25", "60"], "--objects 25 60: tab1 sweeps 25 / 50 / 100 / 500"),
                      (["tab4", "--objects", "40", "100"], "tab4 has rooms of one count; give one number"),
                      (["tab4", "--objects", "0"], "--objects 0: give 1 or more"),
                      (["tab5", "--scene_seeds", "3", "9"], "--scene_seeds 3 9: tab5's scenes have seeds 2 / 3 / 4")):
        proc = subprocess.run([sys.executable, script, *bad], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and what in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, script, "fig8", "--dry_run", "--runs", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "| fig8 | 1 x 3 x 2 | 6 | 30000 | 1 |" in proc.stdout
    assert "fig8: replica_like_40_s2_640x480_300v_panopli/masks_0.25x/seed0 ->" in proc.stdout
    assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_line_figures_do_not_magnify_noise_into_a_trend():
    """Tab. 6 on the H200 (RESULTS 19) spread 96.61..96.78: drawn on its own range, that 0.17-point
    spread filled the plot. The limits span at least MIN_SCORE_SPAN points and stay within 0..100."""
    lo, hi = pt.score_limits([96.61, 96.78])
    assert hi - lo >= pt.MIN_SCORE_SPAN and lo < 96.61 and hi > 96.78
    assert abs((lo + hi) / 2 - 96.695) < 1e-9  # centred on the data
    lo, hi = pt.score_limits([99.5, 99.9])
    assert hi == 100.0 and hi - lo >= pt.MIN_SCORE_SPAN
    lo, hi = pt.score_limits([20.0, 90.0])  # a real spread keeps its own range, padded
    assert lo < 20.0 and 90.0 < hi <= 100.0 and hi - lo < 100.0


def test_value_labels_of_close_points_are_drawn_apart():
    """Tab. 1 at 25 objects (RESULTS 26): 87.4 and 86.4 of two series lie 6 points apart on the page; both
    labels above their points drew one number over the other. The lower one now goes below, a lone
    point keeps its label above, and no two labels at one x overlap where a free side exists."""
    h = pt.LABEL_HEIGHT

    def labels_below(points):
        return [below for below, _ in pt.above_below(points)]

    def boxes(points, below):
        return [(x, y + (pt.LABEL_BELOW if b else pt.LABEL_ABOVE)) for (x, y), b in zip(points, below)]

    pts = [(25, 200.0), (25, 206.0), (50, 150.0)]  # two close points at x = 25, one alone at x = 50
    assert labels_below(pts) == [True, False, False]
    spread = [(25, 100.0), (25, 200.0)]  # far apart: both above
    assert labels_below(spread) == [False, False]
    three = [(25, 206.0), (25, 200.0), (25, 185.0)]  # 87.4, 86.4, 83.8 of docs/tab1.png, in points
    below = labels_below(three)
    placed = sorted(y for _, y in boxes(three, below))
    assert below[0] is False and below[1] is True
    assert all(b - a >= h - 4.5 for a, b in zip(placed, placed[1:]))  # at most a sliver of overlap
    assert labels_below([(1, 5.0), (1, 5.0)]) in ([True, False], [False, True])  # equal values: one each side


def test_a_crowded_column_of_labels_goes_beside_its_markers_without_overlap():
    """Tab. 1 at 25 objects with four series (RESULTS 27): 87.4, 86.4, 83.8 and 82.4 lie within 40 points on the page,
    too close for above/below; that column moves beside the markers, each label near its point and none overlapping.
    Columns that fit above/below keep that placement; the last x puts its column on the left, inside the axes."""
    h, gap = pt.LABEL_HEIGHT, pt.LABEL_GAP
    crowded = [(25, 230.0), (25, 222.0), (25, 201.0), (25, 190.0)]
    apart = [(50, 100.0), (50, 200.0)]
    last = [(500, 60.0), (500, 62.0), (500, 64.0)]
    places = pt.label_places(crowded + apart + last)
    side, fits, end = places[:4], places[4:6], places[6:]
    assert all(ha == "left" and dx > 0 for dx, _, ha, _ in side)
    ys = sorted(y + dy for (_, y), (_, dy, _, _) in zip(crowded, side))
    assert all(b - a >= h + gap - 1e-9 for a, b in zip(ys, ys[1:]))  # no two labels overlap
    assert max(abs(dy) for _, dy, _, _ in side) < h  # and each stays by its own point
    assert fits == [(0.0, pt.LABEL_ABOVE, "center", "baseline")] * 2
    assert all(ha == "right" and dx < 0 for dx, _, ha, _ in end)
    ys_end = [y + dy for (_, y), (_, dy, _, _) in zip(last, end)]
    assert ys_end == sorted(ys_end) and abs(sum(ys_end) / 3 - 62.0) < 1e-9  # order kept, centred on the points


def test_dodge_is_the_closest_placement_with_the_gap():
    assert pt.dodge([0.0, 100.0], 8.0) == [0.0, 100.0]  # far apart: unmoved
    assert pt.dodge([10.0, 10.0], 8.0) == [6.0, 14.0]  # a tie: spread evenly about the shared value
    out = pt.dodge([5.0, 0.0, 1.0], 4.0)  # any order in, each keeps its own rank
    assert out[1] < out[2] < out[0] and abs(out[2] - out[1] - 4.0) < 1e-9 and abs(out[0] - out[2] - 4.0) < 1e-9
    assert abs(sum(out) - 6.0) < 1e-9  # one block: its mean stays the points' mean (least squares)


def test_series_run_on_different_seeds_say_so_in_the_legend():
    """Fig. 9 of RESULTS 21b: the first series had seeds 0 and 1, the second only seed 1; drawn side by side
    unmarked, a one-seed point looks like a gain over a two-seed mean. Series that agree get no mark."""
    spec = pt.TABLES["fig9"]
    sc = spec["scenes"][0]
    entries = [{"scene": sc.name, "variant": "masks_10pct", "seeds": [0, 1]},
               {"scene": sc.name, "variant": "masks_20pct", "seeds": [1]},
               {"scene": sc.name, "variant": "masks_10pct_share", "seeds": [1]},
               {"scene": sc.name, "variant": "masks_5pct_share", "seeds": []}]  # a failed row adds no seed
    marks = pt.series_seeds(spec, entries)
    plain = spec["figure"]["series"](sc, "masks_10pct")
    share = spec["figure"]["series"](sc, "masks_10pct_share")
    assert plain != share and marks == {plain: " (seeds 0, 1)", share: " (seed 1)"}
    entries[0]["seeds"] = [1]
    assert pt.series_seeds(spec, entries) == {plain: "", share: ""}
