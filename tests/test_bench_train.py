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
    assert "loss/cluster" in runs["unic"]["profile"] and "loss/cluster" not in runs["plain"]["profile"]
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
