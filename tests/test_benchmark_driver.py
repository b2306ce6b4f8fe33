"""Benchmark driver: table building, resume logic and job running with fake stages; plus an
end-to-end run of train/render/metrics on two tiny scenes (``-m slow``)."""
import json
import os
import subprocess
import sys
import time

import pytest

from benchmarks.run_suite import (REPO, Job, build_table, collect_run, default_commands, method_means, plan_jobs,
                                  run_jobs, stages_to_run, suite_scenes, write_reports)


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh)


def _row(scene, method, pq, miou, psnr, train_s, cluster_s=0.0, mem=None, status="ok", error=None):
    return {"scene": scene, "method": method, "PQ_scene": pq, "mIoU": miou, "PSNR": psnr, "train_seconds": train_s,
            "cluster_seconds": cluster_s, "peak_gpu_mem_mb": mem, "status": status, "error": error}


# --------------------------------------------------------------------------- table

def test_build_table_rows_means_and_failures():
    rows = [
        _row("room_0", "unic", 80.0, 70.0, 30.0, 600.0, mem=2048.0),
        _row("room_1", "unic", 60.0, 50.0, 32.0, 1200.0, mem=4096.0),
        _row("room_0", "contrastive_lift", 70.0, 65.0, 29.5, 90.0, cluster_s=45.0),
        _row("room_1", "contrastive_lift", None, None, None, None, status="failed",
             error="train failed (exit 2); log: x/train.log"),
    ]
    table = build_table({"runs": rows})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Scene | Method | PQ^scene | mIoU | PSNR | Train time | Clustering | Peak GPU mem")
    assert "| room_0 | unic | 80.00 | 70.00 | 30.00 | 10.0 min | - | 2.00 GB | ok |" in lines
    assert "| **mean** | unic | 70.00 | 60.00 | 31.00 | 15.0 min | - | 3.00 GB | |" in lines
    assert "| room_0 | contrastive_lift | 70.00 | 65.00 | 29.50 | 90.0 s | 45.0 s | - | ok |" in lines
    failed = [ln for ln in lines if ln.startswith("| room_1 | contrastive_lift")][0]
    assert "FAILED: train failed (exit 2)" in failed and "| - | - | - |" in failed
    # The mean of a method with a failure counts only its successful scenes, and says so.
    assert "| **mean** (1 of 2) | contrastive_lift | 70.00 | 65.00 | 29.50 | 90.0 s | 45.0 s | - | |" in lines
    # Row order: unic block, its mean, then the baseline block, its mean.
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["room_0", "room_1", "**mean**", "room_0", "room_1",
                                                                "**mean** (1 of 2)"]
    means = method_means(rows)
    assert means["unic"]["PQ_scene"] == pytest.approx(70.0) and means["contrastive_lift"]["scenes"] == 1


def test_collect_run_reads_latest_iteration(tmp_path):
    job = Job(scene="/s/room", name="room", method="unic", model_path=str(tmp_path / "room" / "unic"))
    _write(os.path.join(job.model_path, "results.json"), {
        "ours_7000": {"PSNR": 20.0, "PQ_scene": 10.0, "mIoU": 11.0},
        "ours_30000": {"PSNR": 31.5, "SSIM": 0.9, "PQ_scene": 77.0, "SQ": 80.0, "RQ": 90.0, "mIoU": 66.0}})
    _write(os.path.join(job.model_path, "train_stats.json"), {
        "train_seconds": 321.0, "cluster_seconds": 0, "peak_gpu_mem_mb": None, "num_gaussians": 1234,
        "iterations": 30000})
    row = collect_run(job)
    assert row["result_key"] == "ours_30000"
    assert (row["PQ_scene"], row["mIoU"], row["PSNR"], row["train_seconds"]) == (77.0, 66.0, 31.5, 321.0)
    assert row["status"] == "ok" and row["peak_gpu_mem_mb"] is None
    # A failure reported by this run wins over stale files; no results at all is a failure too.
    assert collect_run(job, {"status": "failed", "error": "render failed (exit 1)"})["status"] == "failed"
    empty = Job("/s/x", "x", "unic", str(tmp_path / "x" / "unic"))
    assert collect_run(empty)["status"] == "failed"


# --------------------------------------------------------------------------- planning / resume

def test_stages_to_run_resumes_from_files(tmp_path):
    model = str(tmp_path / "m")
    assert stages_to_run(model) == ["train", "render", "metrics"]
    _write(os.path.join(model, "train_stats.json"), {"train_seconds": 1.0})
    assert stages_to_run(model) == ["render", "metrics"]
    _write(os.path.join(model, "results.json"), {"ours_10": {"PSNR": 1.0}})
    assert stages_to_run(model) == []
    assert stages_to_run(model, force=True) == ["train", "render", "metrics"]
    # synthetic scenes: the extraction stage follows until extraction.json exists
    assert stages_to_run(model, extraction=True) == ["extraction"]
    assert stages_to_run(str(tmp_path / "new"), extraction=True) == ["train", "render", "metrics", "extraction"]
    _write(os.path.join(model, "extraction.json"), {})
    assert stages_to_run(model, extraction=True) == []
    assert stages_to_run(model, force=True, extraction=True)[-1] == "extraction"


def test_plan_jobs_names_and_commands(tmp_path):
    for d in ("replica/room_0", "scannet/room_0", "suite/a", "suite/b"):
        os.makedirs(tmp_path / d)
    (tmp_path / "suite" / "a" / "splits.json").write_text("{}")
    (tmp_path / "suite" / "b" / "metadata.json").write_text("{}")
    os.makedirs(tmp_path / "suite" / "not_a_scene")
    assert [os.path.basename(s) for s in suite_scenes(str(tmp_path / "suite"))] == ["a", "b"]
    jobs = plan_jobs([str(tmp_path / "replica/room_0"), str(tmp_path / "scannet/room_0")],
                     ["unic", "contrastive_lift"], str(tmp_path / "out"))
    assert [(j.name, j.method) for j in jobs] == [("replica_room_0", "unic"), ("replica_room_0", "contrastive_lift"),
                                                 ("scannet_room_0", "unic"), ("scannet_room_0", "contrastive_lift")]
    assert jobs[1].model_path == str(tmp_path / "out" / "replica_room_0" / "contrastive_lift")
    cmds = default_commands(jobs[1], iterations=30, extra=["--seed", "3"])
    assert cmds["train"][1:] == [os.path.join(REPO, "train.py"), "-s", jobs[1].scene, "-m", jobs[1].model_path,
                                 "--eval", "--quiet", "--method", "contrastive_lift", "--iterations", "30",
                                 "--seed", "3"]
    assert cmds["render"][2:] == ["-m", jobs[1].model_path, "--labels", "--skip_train", "--quiet"]
    assert cmds["metrics"][2:] == ["-m", jobs[1].model_path, "--quiet"]
    assert cmds["extraction"][1:] == [os.path.join(REPO, "tools", "objects.py"), "evaluate", "-m", jobs[1].model_path,
                                      "--scene", jobs[1].scene, "--json",
                                      os.path.join(jobs[1].model_path, "extraction.json"), "--quiet"]


# --------------------------------------------------------------------------- running with fake stages

FAKE_STAGE = r"""
import json, os, sys, time
stage, model, fail = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(model, exist_ok=True)
with open(os.path.join(model, "calls.txt"), "a") as fh:
    fh.write(f"{stage} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')} {time.time()}\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if stage == fail:
    print("error: something broke in " + stage)
    sys.exit(3)
if stage == "train":
    json.dump({"train_seconds": 12.0, "cluster_seconds": 0, "peak_gpu_mem_mb": None, "num_gaussians": 5,
               "iterations": 30}, open(os.path.join(model, "train_stats.json"), "w"))
if stage == "metrics":
    json.dump({"ours_30": {"PSNR": 25.0, "PQ_scene": 50.0, "mIoU": 40.0}},
              open(os.path.join(model, "results.json"), "w"))
if stage == "extraction":
    json.dump({"all": {"median_precision": 0.5, "median_recall": 0.9},
               "extract": {"median_precision": 0.96, "median_recall": 0.875}},
              open(os.path.join(model, "extraction.json"), "w"))
"""


def _fake_commands(fail_for=None, extraction=False):
    stages = ("train", "render", "metrics") + (("extraction",) if extraction else ())

    def commands(job):
        fail = fail_for.get(job.name, "") if fail_for else ""
        return {s: [sys.executable, "-c", FAKE_STAGE, s, job.model_path, fail] for s in stages}
    return commands


def _calls(job):
    with open(os.path.join(job.model_path, "calls.txt")) as fh:
        return [ln.split() for ln in fh.read().splitlines()]


def test_sweep_reports_failures_and_resumes(tmp_path):
    scenes = [str(tmp_path / "scenes" / n) for n in ("alpha", "beta")]
    for s in scenes:
        os.makedirs(s)
    out = str(tmp_path / "out")
    jobs = plan_jobs(scenes, ["unic"], out)
    msgs = []
    outcomes = run_jobs(jobs, _fake_commands({"beta": "render"}), log=msgs.append)
    assert outcomes[jobs[0]]["status"] == "ok" and outcomes[jobs[0]]["stages_run"] == ["train", "render", "metrics"]
    assert outcomes[jobs[1]]["status"] == "failed" and "render failed (exit 3)" in outcomes[jobs[1]]["error"]
    assert outcomes[jobs[1]]["error_line"] == "error: something broke in render"
    results = write_reports(out, jobs, outcomes, {"iterations": 30})
    md = open(os.path.join(out, "results.md")).read()
    assert "| alpha | unic | 50.00 | 40.00 | 25.00 | 12.0 s | - | - | ok |" in md
    assert "| beta | unic | - | - | - | 12.0 s | - | - | FAILED: render failed (exit 3)" in md
    assert "| **mean** (1 of 2) | unic | 50.00 | 40.00 | 25.00 |" in md
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["runs"][0]["PQ_scene"] == 50.0 and saved["runs"][1]["status"] == "failed"
    assert os.path.isfile(os.path.join(jobs[1].model_path, "logs", "render.log"))

    # Second sweep: alpha is finished (skipped); beta was trained, so only render + metrics rerun.
    outcomes = run_jobs(jobs, _fake_commands(), log=msgs.append)
    assert outcomes[jobs[0]]["stages_run"] == []
    assert outcomes[jobs[1]]["stages_run"] == ["render", "metrics"] and outcomes[jobs[1]]["status"] == "ok"
    assert [c[0] for c in _calls(jobs[0])] == ["train", "render", "metrics"]
    assert [c[0] for c in _calls(jobs[1])] == ["train", "render", "render", "metrics"]
    results = write_reports(out, jobs, outcomes, {})
    assert [r["status"] for r in results["runs"]] == ["ok", "ok"]
    assert any("done already, skipped" in m for m in msgs)


def test_extraction_stage_and_columns_only_for_generated_scenes(tmp_path):
    scenes = [str(tmp_path / "scenes" / n) for n in ("synth", "real")]
    for s in scenes:
        os.makedirs(s)
    _write(os.path.join(scenes[0], "generator.json"), {"objects": []})
    out = str(tmp_path / "out")
    jobs = plan_jobs(scenes, ["unic"], out)
    outcomes = run_jobs(jobs, _fake_commands(extraction=True), log=lambda m: None)
    assert outcomes[jobs[0]]["stages_run"] == ["train", "render", "metrics", "extraction"]
    assert outcomes[jobs[1]]["stages_run"] == ["train", "render", "metrics"]
    results = write_reports(out, jobs, outcomes, {})
    synth, real = results["runs"]
    assert (synth["extract_P"], synth["extract_R"], synth["extract_P_all"]) == (0.96, 0.875, 0.5)
    assert real["extract_P"] is None and results["means"]["unic"]["extract_P"] == pytest.approx(0.96)
    md = open(os.path.join(out, "results.md")).read()
    assert "| Peak GPU mem | Extract P | Extract R | Status |" in md
    assert "| synth | unic | 50.00 | 40.00 | 25.00 | 12.0 s | - | - | 0.960 | 0.875 | ok |" in md
    assert "| real | unic | 50.00 | 40.00 | 25.00 | 12.0 s | - | - | - | - | ok |" in md
    assert "| **mean** | unic | 50.00 | 40.00 | 25.00 | 12.0 s | - | - | 0.960 | 0.875 | |" in md
    # resume: nothing left to run; without generated scenes the table has no extraction columns
    again = run_jobs(jobs, _fake_commands(extraction=True), log=lambda m: None)
    assert all(o["stages_run"] == [] for o in again.values())
    assert "Extract P" not in build_table({"runs": [real]})


def test_one_job_per_gpu_in_parallel(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.4")
    scenes = [str(tmp_path / "scenes" / n) for n in ("a", "b", "c", "d")]
    for s in scenes:
        os.makedirs(s)
    jobs = plan_jobs(scenes, ["unic"], str(tmp_path / "out"))
    outcomes = run_jobs(jobs, _fake_commands(), gpus=["0", "1"], log=lambda m: None)
    assert all(o["status"] == "ok" for o in outcomes.values())
    gpus_of_job = [{c[1] for c in _calls(j)} for j in jobs]
    assert all(len(g) == 1 for g in gpus_of_job)  # every stage of a job on the same GPU
    assert set.union(*gpus_of_job) == {"0", "1"}
    # Two jobs on different GPUs overlap in time.
    spans = [(float(_calls(j)[0][2]), float(_calls(j)[-1][2]) + 0.4, next(iter(g))) for j, g in zip(jobs, gpus_of_job)]
    overlaps = any(a[0] < b[1] and b[0] < a[1] and a[2] != b[2] for i, a in enumerate(spans) for b in spans[i + 1:])
    assert overlaps


# --------------------------------------------------------------------------- end to end

def _e2e_ready():
    needed = ["train.py", "render.py", "metrics.py", os.path.join("tools", "make_scene.py")]
    missing = [p for p in needed if not os.path.isfile(os.path.join(REPO, p))]
    return (False, f"not written yet: {', '.join(missing)}") if missing else (True, "")


@pytest.mark.slow
def test_end_to_end_two_tiny_scenes_on_cpu(tmp_path):
    ready, why = _e2e_ready()
    if not ready:
        pytest.skip(why)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # CPU, even on a GPU machine
    scenes = []
    for seed in (0, 1):
        scene = str(tmp_path / f"tiny{seed}")
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_scene.py"), "--out", scene, "--objects", "5",
                        "--views", "8", "--size", "64x48", "--noise", "realistic", "--seed", str(seed)],
                       cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
        scenes.append(scene)
    out = str(tmp_path / "bench")
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "run_suite.py"), "--scenes", *scenes, "--methods", "unic",
           "--out", out, "--iterations", "30", "--timeout", "900"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert [r["scene"] for r in results["runs"]] == ["tiny0", "tiny1"]
    for r in results["runs"]:
        assert r["status"] == "ok"
        assert 0.0 <= r["PQ_scene"] <= 100.0 and 0.0 <= r["mIoU"] <= 100.0 and r["PSNR"] > 5.0
        assert r["iterations"] == 30 and r["train_seconds"] > 0
        details = json.load(open(os.path.join(r["model_path"], "panoptic_details.json")))
        assert details[r["result_key"]]["num_views"] >= 1
        assert 0.0 <= r["extract_P"] <= 1.0 and 0.0 <= r["extract_R"] <= 1.0  # generated scenes: measured
    md = open(os.path.join(out, "results.md")).read()
    assert "| tiny0 | unic |" in md and "| **mean** | unic |" in md and "Extract P" in md
    first = time.time() - t0
    # Resume: a second sweep finds everything done and only rebuilds the table.
    t0 = time.time()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("done already, skipped") == 2
    assert time.time() - t0 < first


def test_every_variant_is_valid_train_flags_and_tables_expand(tmp_path):
    """Each named variant parses with train.py's own parser and sets what its name says."""
    import train
    from benchmarks.run_suite import PAPER_TABLES, VARIANTS, parse_args

    base = ["-s", str(tmp_path), "-m", str(tmp_path / "m")]
    got = {name: train.prepare_args(base + flags) for name, flags in VARIANTS.items()}
    assert got["contrastive_lift"].method == "contrastive_lift" and got["unic"].method == "unic"
    assert not got["cl_only"].use_triplet and not got["cl_only"].use_3d and got["cl_only"].use_cluster
    assert got["cl_3d"].use_3d and not got["cl_3d"].use_triplet
    assert got["cl_triplet_noW"].linear_layer == "identity" and not got["cl_triplet_noW"].use_3d
    assert got["all_noW"].linear_layer == "identity" and got["all_noW"].use_3d and got["all_noW"].use_triplet
    assert [got[f"l3d_{k}k"].l3d_from_iter for k in (7, 12, 15, 20)] == [7000, 12000, 15000, 20000]
    assert [got[f"masks_{p}pct"].mask_fraction for p in (5, 10, 20)] == [0.05, 0.1, 0.2]
    assert got["masks_0.25x"].mask_downscale == 0.25 and got["masks_0.5x"].mask_downscale == 0.5
    for table in PAPER_TABLES.values():
        assert set(table) <= set(VARIANTS)
    a = parse_args(["--scenes", "x", "--table", "tab4", "--methods", "contrastive_lift"])
    assert a.methods == ["contrastive_lift"] + [m for m in PAPER_TABLES["tab4"]]
    assert parse_args(["--scenes", "x"]).methods == ["unic"]
