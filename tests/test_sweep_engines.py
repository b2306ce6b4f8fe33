"""run_suite's engines: side-by-side slots on one GPU, seeds as jobs, the gsplat warm-up, and the Ray
engine on a local Ray instance with fake stages (results and resume as with the local pool)."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks.run_suite import (REPO, default_commands, gpu_slots, parse_args, plan_jobs, run_jobs,
                                  warm_up_gsplat, warm_up_subprocess, write_reports)
from tests.test_benchmark_driver import _calls, _fake_commands


def _scenes(tmp_path, names):
    out = []
    for n in names:
        os.makedirs(tmp_path / "scenes" / n)
        out.append(str(tmp_path / "scenes" / n))
    return out


def _spans(job, sleep):
    calls = _calls(job)
    return float(calls[0][2]), float(calls[-1][2]) + sleep


def test_gpu_slots_interleave_gpus():
    assert gpu_slots(["0", "1"], 2) == ["0", "1", "0", "1"]
    assert gpu_slots(["3"], 3) == ["3", "3", "3"]
    assert gpu_slots([], 1) == [None] and gpu_slots([], 2) == [None, None]


def test_seeds_are_jobs_with_their_own_folders_and_flag(tmp_path):
    scene, = _scenes(tmp_path, ["room"])
    jobs = plan_jobs([scene], ["unic", "contrastive_lift"], str(tmp_path / "out"), seeds=[0, 1])
    assert [(j.method, j.seed) for j in jobs] == [("unic", 0), ("unic", 1), ("contrastive_lift", 0),
                                                 ("contrastive_lift", 1)]
    assert jobs[1].model_path == str(tmp_path / "out" / "room" / "unic-seed1") and jobs[1].tag == "room/unic/seed1"
    train = default_commands(jobs[3], iterations=50)["train"]
    assert train[-4:] == ["--iterations", "50", "--seed", "1"] and "contrastive_lift" in train
    # without seeds: the old layout and no --seed
    plain = plan_jobs([scene], ["unic"], str(tmp_path / "out"))[0]
    assert plain.seed is None and plain.model_path.endswith(os.path.join("room", "unic"))
    assert "--seed" not in default_commands(plain)["train"]
    # a custom variant table
    train = default_commands(plain, variants={"unic": ["--method", "unic", "--l3d_from_iter", "700"]})["train"]
    assert train[-2:] == ["--l3d_from_iter", "700"]
    with pytest.raises(SystemExit):
        plan_jobs([scene], ["unic"], str(tmp_path / "out"), seeds=[1, 1])
    # the rows say which seed, and the table too
    outcomes = run_jobs(jobs[:2], _fake_commands(), log=lambda m: None)
    results = write_reports(str(tmp_path / "out"), jobs[:2], outcomes, {})
    assert [r["seed"] for r in results["runs"]] == [0, 1]
    md = open(tmp_path / "out" / "results.md").read()
    assert "| room (seed 1) | unic | 50.00 |" in md and "| **mean** | unic | 50.00 |" in md


def test_jobs_per_gpu_runs_side_by_side_on_one_gpu_after_warm_up(tmp_path, monkeypatch):
    sleep = 0.5
    monkeypatch.setenv("FAKE_SLEEP", str(sleep))
    jobs = plan_jobs(_scenes(tmp_path, ["a", "b", "c", "d"]), ["unic"], str(tmp_path / "out"))
    warmed = []
    outcomes = run_jobs(jobs, _fake_commands(), gpus=["0"], log=lambda m: None, jobs_per_gpu=2,
                        warm_up=lambda gpu: warmed.append(gpu))
    assert warmed == ["0"] and all(o["status"] == "ok" for o in outcomes.values())
    assert {c[1] for j in jobs for c in _calls(j)} == {"0"}  # every stage on GPU 0
    spans = [_spans(j, sleep) for j in jobs]
    at_once = max(sum(s[0] <= t < s[1] for s in spans) for t, _ in spans)
    assert at_once == 2  # two side by side, never more


def test_warm_up_is_a_no_op_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA machine: the warm-up really builds gsplat (covered by GPU runs)")
    assert warm_up_gsplat() is None
    msgs = []
    assert warm_up_subprocess(log=msgs.append, timeout=120)
    assert msgs == ["gsplat: no CUDA, nothing to build"]


def test_engine_args_are_checked_in_one_line(tmp_path):
    for bad, what in ((["--jobs_per_gpu", "0"], "--jobs_per_gpu 0"),
                      (["--engine", "ray", "--gpus", "0,1"], "--gpus is for --engine local"),
                      (["--address", "auto"], "--address needs --engine ray")):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "run_suite.py"), "--scenes",
                               str(tmp_path), *bad], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and what in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    a = parse_args(["--scenes", "x", "--engine", "ray", "--jobs_per_gpu", "4", "--seeds", "0", "1"])
    assert (a.engine, a.jobs_per_gpu, a.seeds, a.address) == ("ray", 4, [0, 1], None)


RAY_INIT = {"num_cpus": 2, "num_gpus": 0}


def test_ray_engine_results_and_resume(tmp_path, monkeypatch):
    """On a running local Ray instance (2 CPUs, no GPU; as on a cluster): every job a task; a failed
    stage fails its row only; a second sweep skips finished jobs and reruns only what is missing,
    as the local pool does; the instance is left running."""
    ray = pytest.importorskip("ray")
    sleep = 0.5
    monkeypatch.setenv("FAKE_SLEEP", str(sleep))
    out = str(tmp_path / "out")
    jobs = plan_jobs(_scenes(tmp_path, ["alpha", "beta", "gamma"]), ["unic"], out)
    msgs = []
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(**RAY_INIT, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        outcomes = run_jobs(jobs, _fake_commands({"beta": "render"}), engine="ray", log=msgs.append,
                            warm_up=lambda gpu: print("warm-up", gpu))
        assert [outcomes[j]["status"] for j in jobs] == ["ok", "failed", "ok"]
        assert outcomes[jobs[1]]["error"].startswith("render failed (exit 3)")
        assert outcomes[jobs[0]]["stages_run"] == ["train", "render", "metrics"]
        assert any("no GPUs in the cluster" in m for m in msgs)
        # every stage of a job ran in the job's own task with no GPU set; two tasks overlapped (2 CPUs)
        assert {c[1] for j in jobs for c in _calls(j)} == {"-"}
        spans = [_spans(j, sleep) for j in jobs]
        assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])
        results = write_reports(out, jobs, outcomes, {"engine": "ray"})
        assert [r["status"] for r in results["runs"]] == ["ok", "failed", "ok"]
        assert results["runs"][0]["PQ_scene"] == 50.0

        # resume: alpha and gamma are done; beta was trained, so only render and metrics run again
        outcomes = run_jobs(jobs, _fake_commands(), engine="ray", log=msgs.append)
        assert [outcomes[j]["stages_run"] for j in jobs] == [[], ["render", "metrics"], []]
        assert [c[0] for c in _calls(jobs[1])] == ["train", "render", "render", "metrics"]
        assert [c[0] for c in _calls(jobs[0])] == ["train", "render", "metrics"]
        assert ray.is_initialized()  # not ours to stop
    finally:
        ray.shutdown()
    results = write_reports(out, jobs, outcomes, {"engine": "ray"})
    assert [r["status"] for r in results["runs"]] == ["ok", "ok", "ok"]
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["config"]["engine"] == "ray" and saved["runs"][1]["PQ_scene"] == 50.0


@pytest.mark.slow
def test_ray_engine_starts_and_stops_its_own_instance(tmp_path):
    """Without a running instance, run_jobs starts a local one (the workers find this repository
    through PYTHONPATH) and shuts it down afterwards. About 10 s, most of it Ray's start."""
    ray = pytest.importorskip("ray")
    jobs = plan_jobs(_scenes(tmp_path, ["solo"]), ["unic"], str(tmp_path / "out"))
    outcomes = run_jobs(jobs, _fake_commands(), engine="ray", log=lambda m: None, ray_init=RAY_INIT,
                        warm_up=lambda gpu: None)
    assert outcomes[jobs[0]]["status"] == "ok" and outcomes[jobs[0]]["stages_run"] == ["train", "render", "metrics"]
    assert not ray.is_initialized()


THREADS_STAGE = ("import os, sys; open(os.path.join(sys.argv[2], sys.argv[1] + '.threads'), 'w')"
                 ".write(os.environ.get('OMP_NUM_THREADS', '-') + ' ' + os.environ.get('MKL_NUM_THREADS', '-'))")


def _threads_commands(job):
    os.makedirs(job.model_path, exist_ok=True)
    return {s: [sys.executable, "-c", THREADS_STAGE, s, job.model_path] for s in ("train", "render", "metrics")}


def _threads_of(job):
    return open(os.path.join(job.model_path, "train.threads")).read()


def test_cpu_jobs_side_by_side_split_the_cores(tmp_path, monkeypatch):
    """Two CPU trainings side by side, each with the whole machine's thread pool, ran ~100x slower than one
    (RESULTS 19c): the pool gives each CPU job its share of the cores, and leaves a user's setting alone."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    jobs = plan_jobs(_scenes(tmp_path, ["a", "b", "c"]), ["unic"], str(tmp_path / "out"))
    outcomes = run_jobs(jobs[:2], _threads_commands, log=lambda m: None, jobs_per_gpu=2)
    assert all(o["status"] == "ok" for o in outcomes.values())
    assert [_threads_of(j) for j in jobs[:2]] == ["4 4", "4 4"]
    run_jobs(jobs[2:], _threads_commands, log=lambda m: None)  # one at a time: torch's own default
    assert _threads_of(jobs[2]) == "- -"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    run_jobs(jobs[:2], _threads_commands, log=lambda m: None, jobs_per_gpu=2, force=True)
    assert _threads_of(jobs[0]).startswith("3 ")
    # GPU jobs keep every core: their CPU side is the neighbour graph's rebuild
    monkeypatch.delenv("OMP_NUM_THREADS")
    run_jobs(jobs[:2], _threads_commands, gpus=["0"], log=lambda m: None, jobs_per_gpu=2, force=True)
    assert _threads_of(jobs[0]) == "- -"
