"""Issue 14 audit: the cases the first pass left open (flags checked before anything is written,
output folders, files next to the PLY loaded with weights_only, SH degree 0, reader messages that
say what to do, objects --decode plain). CPU, small, seconds."""
from __future__ import annotations

import ast
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from scene.cameras import SceneError
from scene.dataset_readers import read_scene
from tests.fixtures_scenes import write_blender, write_messy, write_panopli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--iterations", "2", "--test_iterations", "-1", "--quiet", "--init_points", "300"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ============================================================================= flags

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")


@pytest.mark.parametrize("flag,value,words", [
    ("--mask_fraction", "0", ("(0, 1]", "--seg_dir ''")),
    ("--mask_fraction", "1.5", ("(0, 1]",)),
    ("--mask_view_share", "1", ("[0, 1)", "pass e.g. 0.5")),
    ("--mask_view_share", "-0.1", ("[0, 1)",)),
    ("--mask_downscale", "0", ("(0, 1]", "pass e.g. 0.5")),
    ("--mask_downscale", "-0.5", ("(0, 1]",)),
    ("--mask_downscale", "2", ("(0, 1]",)),
    ("--emb_dim", "0", ("1..15",)),
    ("--emb_dim", "16", ("uint16",)),
    ("--sh_degree", "-1", ("0..3",)),
    ("-r", "0", ("1, 2, 4 or 8",)),
    ("--init_points", "-1", ("positive cap",)),
    ("--checkpoint_every", "-5", ("0 (off)",)),
    ("--device", "tpu", ("auto, cpu or cuda",)),
    pytest.param("--device", "cuda", ("no CUDA GPU", "--device cpu"), marks=NO_CUDA),
    pytest.param("--data_device", "cuda", ("no CUDA GPU", "--data_device cpu"), marks=NO_CUDA),
    pytest.param("--optimizer", "fused", ("needs a CUDA device", "adam"), marks=NO_CUDA),
])
def test_bad_flag_is_one_line_and_writes_nothing(tiny_scene, tmp_path, capsys, flag, value, words):
    out = tmp_path / "m"
    assert train.main(["-s", tiny_scene, "-m", str(out), *FAST, flag, value]) == 2
    err = _err(capsys)
    assert f"{flag} {value}" in err and ";" in err, err
    for w in words:
        assert w in err, err
    assert not out.exists()  # refused before the folder is made


def test_views_too_small_to_train_are_refused(tiny_scene, tmp_path, capsys):
    assert train.main(["-s", tiny_scene, "-m", str(tmp_path / "m"), *FAST, "--mask_downscale", "0.01"]) == 2
    err = _err(capsys)
    assert "1x1 views" in err and "64x48" in err and "--mask_downscale" in err, err
    assert train.main(["-s", tiny_scene, "-m", str(tmp_path / "s"), *FAST, "--seg_scale", "0.05"]) == 2
    err = _err(capsys)
    assert "--seg_scale 0.05" in err and "3x2" in err and "larger --seg_scale" in err, err


def test_output_folder_under_a_file_readonly_or_the_scene_is_refused(tiny_scene, tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert train.main(["-s", tiny_scene, "-m", str(a_file / "m"), *FAST]) == 2
    assert f"lies under the file {a_file}" in _err(capsys)
    assert train.main(["-s", tiny_scene, "-m", str(a_file), *FAST]) == 2
    assert "output folder is a file" in _err(capsys)
    assert train.main(["-s", tiny_scene, "-m", tiny_scene, *FAST]) == 2
    assert "is the scene folder" in _err(capsys)
    assert not os.path.exists(os.path.join(tiny_scene, "cfg_args"))
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        assert train.main(["-s", tiny_scene, "-m", str(ro / "m"), *FAST]) == 2
        assert "no permission" in _err(capsys)


def test_refused_rerun_leaves_the_existing_models_files_alone(tiny_scene, tmp_path, capsys):
    """A rerun on a trained model folder that is refused (a bad flag found while loading the views,
    a checkpoint of other flags) rewrites neither cfg_args nor cameras.json."""
    out = tmp_path / "m"
    assert train.main(["-s", tiny_scene, "-m", str(out), *FAST, "--checkpoint_iterations", "2"]) == 0
    before = {n: (out / n).read_bytes() for n in ("cfg_args", "cameras.json")}
    assert train.main(["-s", tiny_scene, "-m", str(out), *FAST, "--mask_downscale", "0.01"]) == 2
    _err(capsys)
    assert train.main(["-s", tiny_scene, "-m", str(out), *FAST, "--emb_dim", "5",
                       "--start_checkpoint", str(out / "chkpnt2.pth")]) == 2
    assert "embedding_dim" in _err(capsys)
    assert {n: (out / n).read_bytes() for n in before} == before


def test_device_flag_of_render_without_a_gpu_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU message")
    import render
    from tests.test_hostile_inputs import _plain_model, write_colmap

    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    assert render.main(["-m", model, "--quiet", "--device", "cuda"]) == 2
    assert "--device cuda" in _err(capsys)
    assert not os.path.exists(os.path.join(model, "test")) and not os.path.exists(os.path.join(model, "train"))


def test_train_cli_bad_flag_exits_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "-s", str(tmp_path), "-m", str(tmp_path / "m"),
                        "--mask_fraction", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: --mask_fraction 0"), r.stderr


# ============================================================================= reader messages

def _package_sources():
    skip = ("tests/", "benchmarks/", "tools/synthetic/")
    return [p for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
            if not os.path.relpath(p, ROOT).startswith(skip) and "/." not in p]


def test_every_scene_error_says_what_to_do():
    """Static check: the text of every ``raise SceneError(...)`` in the package has a '; <what to do>'
    part after the '<file>: <what is wrong>' part (f-string pieces joined)."""
    missing = []
    for path in _package_sources():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            if getattr(func, "id", getattr(func, "attr", None)) != "SceneError" or not node.exc.args:
                continue
            arg = node.exc.args[0]
            if not isinstance(arg, (ast.JoinedStr, ast.Constant)):
                continue  # a message built elsewhere (re-raised text): checked where it is made
            text = "".join(n.value for n in ast.walk(arg) if isinstance(n, ast.Constant) and isinstance(n.value, str))
            if ";" not in text and ": pass" not in text:
                missing.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {text[:80]!r}")
    assert not missing, "\n".join(missing)


def _blender_with(tmp_path, edit):
    write_blender(tmp_path)
    p = tmp_path / "transforms_train.json"
    meta = json.loads(p.read_text())
    edit(meta)
    p.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit,words", [
    (lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")), ("frame 1", "NaN or inf")),
    (lambda m: m["frames"][0].__setitem__("transform_matrix", m["frames"][0]["transform_matrix"][:3]), ("3x4",)),
    (lambda m: m["frames"][0].__setitem__("transform_matrix", "x"), ("not numeric",)),
    (lambda m: m["frames"][0].pop("file_path"), ("lacks 'file_path'",)),
])
def test_blender_bad_frame_is_one_line_with_a_fix(tmp_path, edit, words):
    _blender_with(tmp_path, edit)
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    msg = str(e.value)
    assert "transforms_train.json" in msg and "; " in msg and "\n" not in msg, msg
    assert "remove the frame" in msg, msg
    for w in words:
        assert w in msg, msg


def test_panopli_bad_pose_and_split_are_one_line_with_a_fix(tmp_path):
    info = write_panopli(tmp_path)
    pose = tmp_path / "pose" / f"{info['names'][2]}.txt"
    m = np.loadtxt(pose)
    m[0, 3] = np.nan
    np.savetxt(pose, m)
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    assert str(pose) in str(e.value) and "inf/nan" in str(e.value) and "drop this view" in str(e.value)
    np.savetxt(pose, np.eye(4))
    (tmp_path / "splits.json").write_text(json.dumps({"train": info["train"], "test": 3}))
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    assert "'test' must be a list" in str(e.value) and "fix the split file" in str(e.value)


@pytest.mark.parametrize("field,value,words", [
    ("positions", [float("nan"), 0.0, 1.0], ("position of frame 1", "NaN or inf")),
    ("quaternions", [float("inf"), 0.0, 0.0, 1.0], ("quaternion of frame 1", "NaN or inf")),
    ("quaternions", [0.0, 0.0, 0.0, 0.0], ("quaternion of frame 1 is zero",)),
])
def test_messy_bad_camera_names_the_frame(tmp_path, field, value, words):
    write_messy(tmp_path, n=4)
    p = tmp_path / "metadata.json"
    meta = json.loads(p.read_text())
    meta["camera"][field][1] = value
    p.write_text(json.dumps(meta))
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    msg = str(e.value)
    assert "metadata.json" in msg and "re-export" in msg, msg
    for w in words:
        assert w in msg, msg


# ============================================================================= files next to the PLY

def test_state_files_load_with_weights_only_and_fail_in_one_line(tmp_path, capsys):
    from segmentation.labels import (SEGMENTATION_FILE, VOTES_FILE, load_code_votes, load_semantic_decoder,
                                     save_code_votes)
    from segmentation.postprocess import CodeVotes

    votes = CodeVotes(torch.tensor([1, 2]), torch.tensor([3, 1]), 4, 2, 16, 0.0)
    save_code_votes(votes, str(tmp_path))
    assert torch.equal(load_code_votes(str(tmp_path)).valid(1), torch.tensor([1, 2]))
    decoder = torch.nn.Linear(3, 5)
    torch.save({"head": None, "decoder": decoder.state_dict(), "edges": None}, tmp_path / SEGMENTATION_FILE)
    assert torch.equal(load_semantic_decoder(str(tmp_path)).weight, decoder.weight)

    import argparse  # any pickled object that is not a tensor or a plain container

    torch.save({"decoder": argparse.Namespace(weight=1)}, tmp_path / SEGMENTATION_FILE)
    with pytest.raises(SceneError) as e:
        load_semantic_decoder(str(tmp_path))
    assert SEGMENTATION_FILE in str(e.value) and "other than tensors" in str(e.value) and "retrain" in str(e.value)
    data = (tmp_path / VOTES_FILE).read_bytes()
    (tmp_path / SEGMENTATION_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(SceneError) as e:
        load_semantic_decoder(str(tmp_path))
    assert "truncated or corrupt" in str(e.value), str(e.value)
    (tmp_path / VOTES_FILE).write_bytes(data[: len(data) // 2])  # a cache: recomputed, with a warning
    capsys.readouterr()
    assert load_code_votes(str(tmp_path)) is None
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and VOTES_FILE in err and "recomputing" in err, err
    torch.save({"format_version": 1, "wins": torch.zeros(2)}, tmp_path / VOTES_FILE)  # loads, lacks 'codes'
    assert load_code_votes(str(tmp_path)) is None
    err = capsys.readouterr().err
    assert VOTES_FILE in err and "unusable (KeyError: 'codes')" in err and "recomputing" in err, err


def test_sh_degree_0_model_saves_and_loads(tmp_path):
    from scene.gaussian_model import GaussianModel

    rng = np.random.default_rng(0)
    model = GaussianModel.from_points(rng.normal(size=(20, 3)).astype(np.float32), rng.random((20, 3)), sh_degree=0)
    path = str(tmp_path / "p.ply")
    model.save_ply(path)
    back = GaussianModel.load_ply(path)
    assert back.max_sh_degree == 0 and back.params["shN"].shape == (20, 0, 3)
    for k in model.params:
        assert torch.equal(model.params[k].detach(), back.params[k].detach()), k


# ============================================================================= objects --decode plain

def test_objects_decode_plain_thresholds_the_embedding(tmp_path, capsys):
    """The PLY's instance_label is snapped (a rare code moves to a valid one); --decode plain gives the
    thresholded code + 1 instead, and stuff Gaussians stay 0 either way."""
    from segmentation.labels import gaussian_label_columns
    from tests.test_objects import THINGS, _model, _save
    from tools import objects

    rare = (3, 4, 20, (0.0, 0.0, 0.2))  # code 3 on 20 Gaussians: snapped to code 1 in the column
    model = _model([(1, 4, 300, (0.0, 0.0, 0.0)), (2, 5, 200, (3.0, 0.0, 0.0)), rare, (0, 1, 50, (1.0, 1.0, -2.0))])
    folder = tmp_path / "model"
    path = os.path.join(folder, "point_cloud", "iteration_1", "point_cloud.ply")
    _save(model, folder)
    model.save_ply(path, gaussian_label_columns(model, THINGS, valid=torch.tensor([1, 2])))
    keep = objects.StrayFilter(keep=True)
    snapped = objects.load_labels(str(folder), strays=keep)
    plain = objects.load_labels(str(folder), strays=keep, decode="plain")
    assert set(snapped.ids.unique().tolist()) == {0, 2, 3}
    assert set(plain.ids.unique().tolist()) == {0, 2, 3, 4}
    assert int((plain.ids == 4).sum()) == 20
    assert torch.equal(plain.ids == 0, snapped.ids == 0)  # the thing/stuff split is the column's
    assert objects.main(["list", "-m", str(folder), "--decode", "plain", "--keep_strays",
                         "--min_gaussians", "10"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    assert any(r and r[0] == "4" for r in rows), rows  # the rare code's own row
    with pytest.raises(objects.ObjectsError):
        objects.load_labels(str(folder), decode="nearest")


@pytest.mark.parametrize("fmt", ["panopli", "messy"])
def test_semantic_class_outside_the_scenes_classes_is_one_line(tmp_path, capsys, fmt):
    """PanopLi (22 classes) and Messy-Rooms (2) have fixed classes: a mask with another class id would
    end in an IndexError inside the loss; it is refused, naming the file."""
    from utils.image_io import save_label_png

    scene = tmp_path / "s"
    if fmt == "panopli":
        info = write_panopli(scene)
        bad = scene / "m2f_semantics" / f"{info['train'][0]}.png"
        save_label_png(bad, np.full((6, 8), 30))
    else:
        write_messy(scene)
        bad = scene / "detic_semantic" / "00001.npy"
        np.save(bad, np.full((6, 8), 7, np.int32))
    assert train.main(["-s", str(scene), "-m", str(tmp_path / "m"), *FAST]) == 2
    err = _err(capsys)
    assert str(bad) in err and "semantic mask holds class" in err and "relabel" in err, err
    assert not os.path.exists(tmp_path / "m" / "cfg_args")


# ============================================================================= cases the audit found untested

def test_panopli_bad_intrinsics_and_scaled_pose_say_what_to_do(tmp_path):
    info = write_panopli(tmp_path)
    intr = tmp_path / "intrinsic" / "intrinsic_color.txt"
    good = np.loadtxt(intr)
    bad = good.copy()
    bad[0, 0] = np.inf
    np.savetxt(intr, bad)
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    assert str(intr) in str(e.value) and "inf/nan" in str(e.value) and "K top-left" in str(e.value), str(e.value)
    np.savetxt(intr, good)
    pose = tmp_path / "pose" / f"{info['names'][1]}.txt"
    np.savetxt(pose, np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    assert str(pose) in str(e.value) and "scaled" in str(e.value) and "rigid" in str(e.value), str(e.value)


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.pop("camera_angle_x"), ("camera_angle_x", "field of view")),
    ("{oops", ("invalid JSON", "re-export")),
])
def test_blender_bad_header_is_one_line(tmp_path, edit, words):
    write_blender(tmp_path)
    p = tmp_path / "transforms_train.json"
    if isinstance(edit, str):
        p.write_text(edit)
    else:
        meta = json.loads(p.read_text())
        edit(meta)
        p.write_text(json.dumps(meta))
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("ids,words", [
    (np.full((6, 8), 2**40, np.int64), ("beyond 31 bits", "relabel")),
    (-np.ones((6, 8), np.int32), ("negative ids",)),
    (np.random.default_rng(0).random((6, 8)), ("non-integer",)),
])
def test_mask_ids_that_do_not_fit_are_one_line(tmp_path, ids, words):
    from scene import load_view
    from tests.fixtures_scenes import write_colmap

    write_colmap(tmp_path, n=3, seg_dir="masks")
    path = tmp_path / "masks" / "img_001.npy"
    os.remove(tmp_path / "masks" / "img_001.png")
    np.save(path, ids)
    with pytest.raises(SceneError) as e:
        fr = next(f for f in read_scene(str(tmp_path), seg_dir="masks").train if f.camera.name == "img_001")
        load_view(fr, 1.0)
    assert str(path) in str(e.value) and ";" in str(e.value), str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_colmap_semantic_class_beyond_uint8_is_refused(tmp_path):
    from tests.fixtures_scenes import write_colmap

    write_colmap(tmp_path, n=3, seg_dir="masks")
    (tmp_path / "sem").mkdir()
    for i in range(3):
        np.save(tmp_path / "sem" / f"img_{i:03d}.npy", np.full((6, 8), 300 if i == 1 else 2, np.int32))
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path), seg_dir="masks", sem_dir="sem")
    assert "img_001.npy" in str(e.value) and "class id 300" in str(e.value) and "relabel" in str(e.value)


def test_render_with_the_scene_gone_and_metrics_before_render_are_one_line(tmp_path, capsys):
    import metrics
    import render
    from tests.test_hostile_inputs import _plain_model, write_colmap

    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    assert metrics.main(["-m", model, "--quiet"]) == 2  # trained, never rendered
    err = _err(capsys)
    assert "no rendered test views" in err and "render.py" in err, err
    os.rename(tmp_path / "scene", tmp_path / "moved")
    assert render.main(["-m", model, "--quiet"]) == 2
    err = _err(capsys)
    assert str(tmp_path / "scene") in err and "is gone" in err and "cfg_args" in err, err
    assert not os.path.exists(os.path.join(model, "test")) and not os.path.exists(os.path.join(model, "train"))


def test_contrastive_lift_with_nothing_covered_is_one_line(tiny_scene, tmp_path, capsys):
    """A Contrastive-Lift run too short to cover any training pixel (opacity above 0.5) has no embedding to
    cluster: one line that names the folder and says to train longer, not HDBSCAN's traceback."""
    out = tmp_path / "cl"
    rc = train.main(["-s", tiny_scene, "-m", str(out), "--iterations", "40", "--test_iterations", "-1", "--quiet",
                     "--init_points", "300", "--method", "contrastive_lift", "--cluster_tune", "off"])
    err = _err(capsys)
    assert rc == 2 and "contrastive_lift has no embedding to cluster" in err and "train longer" in err, err
    assert str(out) in err


def test_a_run_that_prunes_every_gaussian_saves_an_empty_model_and_says_so(tiny_scene, tmp_path, capsys):
    """20 initial points on this scene are all pruned by iteration 40: the save still writes a (0-row) PLY
    that reads back, and stderr says what happened and what to try."""
    from utils.ply import read_ply

    out = tmp_path / "empty"
    rc = train.main(["-s", tiny_scene, "-m", str(out), "--iterations", "40", "--test_iterations", "-1", "--quiet",
                     "--init_points", "20"])
    err = capsys.readouterr().err
    assert rc == 0 and "no Gaussians left at iteration 40" in err and "--init_points" in err, err
    cols = read_ply(str(out / "point_cloud" / "iteration_40" / "point_cloud.ply"))
    assert all(len(v) == 0 for v in cols.values()) and {"x", "f_dc_0", "instance_label"} <= set(cols)
