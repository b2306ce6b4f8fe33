"""benchmarks/bench_train.py end to end on the CPU at toy size: every stage runs, the JSON has the fields."""
import json
import os

import pytest

from benchmarks import bench_train


@pytest.mark.slow
def test_bench_train_writes_markdown_and_json(tiny_scene, tmp_path):
    out = str(tmp_path / "bench")
    rc = bench_train.main(["--scene", tiny_scene, "--out", out, "--iterations", "20", "--variants", "plain,unic",
                           "--", "--init_points", "800"])
    assert rc == 0
    report = json.load(open(os.path.join(out, "bench.json")))
    assert report["meta"]["iterations"] == 20 and report["meta"]["scene"] == tiny_scene
    runs = {r["variant"]: r for r in report["runs"]}
    assert set(runs) == {"plain", "unic"}
    for r in runs.values():
        assert r["status"] == "ok"
        assert r["it_per_s"] > 0 and r["train_seconds"] > 0 and r["iterations"] == 20
        assert r["PSNR"] is not None and "render" in r["profile"] and "backward" in r["profile"]
        assert os.path.isfile(os.path.join(out, "logs", f"{r['run']}_train.log"))
    assert runs["plain"]["PQ_scene"] is None and runs["unic"]["PQ_scene"] is not None
    assert "loss/3d" in runs["unic"]["profile"] and "loss/3d" not in runs["plain"]["profile"]
    assert runs["plain"]["vs_plain"] == 1.0 and runs["unic"]["vs_plain"] > 0
    md = open(os.path.join(out, "bench.md")).read()
    assert "plain_s0" in md and "unic_s0" in md and "| render |" in md
    # Run again: finished runs are reused (no training), the report is the same.
    import time

    t0 = time.perf_counter()
    assert bench_train.main(["--scene", tiny_scene, "--out", out, "--iterations", "20", "--variants", "plain,unic",
                             "--", "--init_points", "800"]) == 0
    assert time.perf_counter() - t0 < 5.0
    again = json.load(open(os.path.join(out, "bench.json")))
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in report["runs"]]
    # --no_phases: the same runs timed without --profile's events are not the ones above: plain trains again
    assert bench_train.main(["--scene", tiny_scene, "--out", out, "--iterations", "20", "--variants", "plain",
                             "--no_phases", "--no_eval", "--", "--init_points", "800"]) == 0
    bare = json.load(open(os.path.join(out, "bench.json")))["runs"][0]
    assert bare["status"] == "ok" and bare["profile"] is None and bare["train_seconds"] > 0
    assert bare["train_seconds"] != runs["plain"]["train_seconds"]


def test_profile_step_reports_wall_host_stages(tiny_scene, tmp_path):
    """benchmarks/profile_step.py on the CPU: both variants run past densification, the host time of
    every stage is recorded, and a loss stage exists only where there are masks."""
    from benchmarks import profile_step

    out = str(tmp_path / "prof")
    assert profile_step.main(["-s", tiny_scene, "--out", out, "--warmup", "12", "--steps", "3", "--log_every", "2",
                              "--densify_until", "10", "--", "--init_points", "500"]) == 0
    res = json.load(open(os.path.join(out, "profile.json")))
    assert set(res) == {"plain", "unic"}
    for r in res.values():
        assert r["wall_ms"] > 0 and r["host_ms"] > 0 and r["gaussians"] > 0 and r["loop_ms"] > 0
        assert {"render", "backward", "optimizer"} <= set(r["host_phases_ms"])
    # every loss is on after densification (L_triplet and L_3D start there)
    assert {"losses", "loss/3d"} <= set(res["unic"]["host_phases_ms"])
    assert "losses" in res["plain"]["host_phases_ms"] and "loss/3d" not in res["plain"]["host_phases_ms"]
    md = open(os.path.join(out, "profile.md")).read()
    assert "| unic |" in md and "| loss/3d |" in md and "train.py loop ms/it" in md
    share = res["unic"]["rebuild_share"]  # the iterations that ran beside a background graph rebuild
    assert set(share) == {"wall", "host"} and all(0.0 <= v <= 1.0 for v in share.values())
    assert "graph rebuild in flight" in md


def test_bench_ops_runs_every_variant_and_they_agree(tmp_path, capsys):
    """benchmarks/bench_ops.py on tiny sizes: each gather and packing variant runs, gives the rows and
    gradients of today's operation (asserted inside), and lands in the table."""
    from benchmarks import bench_ops

    out = str(tmp_path / "ops.md")
    assert bench_ops.main(["--device", "cpu", "--n", "3000", "--pixels", "900", "--segments", "7", "--edges", "500",
                           "--layout_n", "2000", "--repeats", "2", "--warmup", "1", "--out", out]) == 0
    text = open(out).read()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| operation")]
    assert len(rows) == 2 * 3 + 3 * 2 + 2 * 2  # gathers, packings, the two feature layouts with and without L_3D
    assert all(float(r.rstrip(" |").rsplit("|", 1)[1]) >= 0 for r in rows)
    assert "flat view (gather_rows)" in text and "one autograd function" in text
    assert "+ L_3D, N = 2000 | packed (colour into the slot)" in text


def test_bench_ops_step_kernel_rows_run_both_sides_and_check_them(monkeypatch):
    """The step kernels' rows (CUDA only): on the CPU, with availability forced, every case runs its 'operators' and
    'step kernel' sides (the callers fall back to the operators off CUDA), checks that they agree and adds two
    timed rows per case; the Voronoi view has the segments asked for."""
    import argparse

    import torch

    from benchmarks import bench_ops
    from gaussian_renderer import step_ops

    args = argparse.Namespace(pixels=1200, segments=9, repeats=2, warmup=1)
    t = bench_ops._voronoi_targets(args, torch.device("cpu"))
    assert t.num_segments == 9 and t.num_anchors > 0
    monkeypatch.setattr(step_ops, "step_ops_available", lambda device: True)
    rows = []
    g = torch.Generator().manual_seed(0)
    table = torch.randn(500, 12, generator=g)
    pairs = torch.randint(0, 500, (400,), generator=g, dtype=torch.int32)
    bench_ops.step_kernel_rows(args, torch.device("cpu"), table, pairs,
                               lambda op, variant, fn: rows.append((op, variant, fn())))
    assert [v for _, v, _ in rows] == ["operators", "step kernel"] * 3
    assert {op.split(",")[0].split(" [")[0] for op, _, _ in rows} == {"L_3D", "triplet term", "cluster term"}


def _fake_trainer(calls):
    """A stand-in for run_stage: 'trains' by writing what train.py writes, with a made-up speed per variant (plain
    1 ms/it, unic 1.5 ms/it; the second repeat on a 20 % slower machine; the second half of each run 10 % slower
    than the first)."""
    def run(cmd, log_path, timeout=None):
        calls.append(cmd)
        model = cmd[cmd.index("-m") + 1]
        its = int(cmd[cmd.index("--iterations") + 1])
        ms = (1.0 if "--seg_dir" in cmd else 1.5) * (1.2 if model.endswith("_r2") else 1.0)
        os.makedirs(model, exist_ok=True)
        t, rows = 0.0, []
        for it in range(100, its + 1, 100):
            t += 100 * ms * (1e-3 if it <= its // 2 else 1.1e-3)
            rows.append({"iteration": it, "seconds": t})
        with open(os.path.join(model, "train_log.jsonl"), "w") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
        with open(os.path.join(model, "train_stats.json"), "w") as f:
            json.dump({"train_seconds": t, "iterations": its, "iterations_per_second": its / t}, f)
        return True, t
    return run


def test_bench_train_repeats_pair_each_run_with_its_own_plain(monkeypatch, tmp_path):
    scene = tmp_path / "scene"
    (scene / "sparse" / "0").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(bench_train, "run_stage", _fake_trainer(calls))
    out = str(tmp_path / "bench")
    assert bench_train.main(["--scene", str(scene), "--out", out, "--iterations", "1000", "--no_eval", "--no_phases",
                             "--variants", "unic", "plain", "--repeats", "2", "--seeds", "3"]) == 0
    report = json.load(open(os.path.join(out, "bench.json")))
    assert [r["run"] for r in report["runs"]] == ["unic_s3", "plain_s3", "unic_s3_r2", "plain_s3_r2"]
    assert len(calls) == 4 and report["meta"]["repeats"] == 2 and report["meta"]["host"]["cpu_count"] >= 1
    runs = {r["run"]: r for r in report["runs"]}
    # 1.5x plain in both repeats: each over its own repeat's plain (over the first plain, r2 would be 1.8x)
    for name in ("unic_s3", "unic_s3_r2"):
        assert runs[name]["vs_plain"] == pytest.approx(1.5)
    # second half: iterations 500-1000 at 1.1x the first half's speed
    assert runs["plain_s3"]["late_ms_per_it"] == pytest.approx(1.1)
    assert runs["unic_s3_r2"]["late_ms_per_it"] == pytest.approx(1.5 * 1.2 * 1.1)
    md = open(os.path.join(out, "bench.md")).read()
    assert "2 runs of each" in md and "| unic | 2 | " in md and "| plain | 2 | " in md
    # a variant named twice is a repeat, not a reuse of the first run
    out2 = str(tmp_path / "bench2")
    assert bench_train.main(["--scene", str(scene), "--out", out2, "--iterations", "1000", "--no_eval",
                             "--no_phases", "--variants", "unic", "plain", "unic"]) == 0
    assert [r["run"] for r in json.load(open(os.path.join(out2, "bench.json")))["runs"]] == \
        ["unic_s0", "plain_s0", "unic_s0_r2"]
    with pytest.raises(SystemExit):
        bench_train.main(["--scene", str(scene), "--out", out2, "--repeats", "0"])


def test_late_ms_per_it_without_a_log_is_none(tmp_path):
    assert bench_train.late_ms_per_it(str(tmp_path)) is None
    (tmp_path / "train_log.jsonl").write_text('{"iteration": 100, "seconds": 0.1}\nnot json\n')
    assert bench_train.late_ms_per_it(str(tmp_path)) is None
