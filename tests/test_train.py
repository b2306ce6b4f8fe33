"""End-to-end training on the CPU: PSNR rises, resume is exact, bad input fails clearly."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import train
from scene.gaussian_model import GaussianModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv):
    args = train.prepare_args(argv)
    return train.training(args)


def test_training_raises_test_psnr(tiny_scene, tmp_path):
    out = str(tmp_path / "m")
    stats = _run(["-s", tiny_scene, "-m", out, "--iterations", "400", "--test_iterations", "1", "400",
                  "--densify_from_iter", "100", "--densification_interval", "100", "--quiet", "--no-use_semantic",
                  "--init_points", "3000"])
    start, end = stats["eval"]["1"]["test"]["psnr"], stats["eval"]["400"]["test"]["psnr"]
    assert end > start + 3.0, (start, end)
    for rel in ("cfg_args", "cameras.json", "train_stats.json", "point_cloud/iteration_400/point_cloud.ply"):
        assert os.path.isfile(os.path.join(out, rel)), rel
    cams = json.load(open(os.path.join(out, "cameras.json")))
    assert {"id", "img_name", "width", "height", "position", "rotation", "fx", "fy"} <= set(cams[0])


def test_resume_matches_uninterrupted_run(tiny_scene, tmp_path):
    common = ["-s", tiny_scene, "--iterations", "60", "--densify_from_iter", "10", "--densification_interval", "10",
              "--opacity_reset_interval", "40", "--test_iterations", "-1", "--quiet", "--seed", "3",
              "--l3d_from_iter", "30", "--triplet_from_iter", "30", "--densify_until_iter", "45",
              "--init_points", "2000"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    _run(common + ["-m", full, "--checkpoint_iterations", "35"])
    _run(common + ["-m", part, "--start_checkpoint", os.path.join(full, "chkpnt35.pth")])
    a = GaussianModel.load_ply(os.path.join(full, "point_cloud/iteration_60/point_cloud.ply"))
    b = GaussianModel.load_ply(os.path.join(part, "point_cloud/iteration_60/point_cloud.ply"))
    assert a.num_gaussians == b.num_gaussians
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k


def _cli(*argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_bad_inputs_fail_with_one_clear_line(tiny_scene, tmp_path):
    r = _cli("-s", str(tmp_path / "nope"), "-m", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert str(tmp_path / "nope") in r.stderr

    r = _cli("-s", tiny_scene, "-m", str(tmp_path / "o"), "--seg_dir", "no_such_masks", "--iterations", "1")
    assert r.returncode == 2 and "no_such_masks" in r.stderr and "Traceback" not in r.stderr

    broken = str(tmp_path / "broken")
    shutil.copytree(tiny_scene, broken)
    victim = sorted(os.listdir(os.path.join(broken, "m2f_instance")))[0]
    os.remove(os.path.join(broken, "m2f_instance", victim))
    r = _cli("-s", broken, "-m", str(tmp_path / "o"), "--iterations", "1")
    assert r.returncode == 2 and os.path.splitext(victim)[0] in r.stderr and "Traceback" not in r.stderr

    r = _cli("-s", tiny_scene, "-m", str(tmp_path / "o"), "--iterations", "1", "--emb_dim", "20")
    assert r.returncode == 2 and "--emb_dim" in r.stderr and "Traceback" not in r.stderr


def _trainer(tiny_scene, tmp_path, *extra):
    args = train.prepare_args(["-s", tiny_scene, "-m", str(tmp_path / "t"), "--quiet", "--init_points", "2000",
                               "--densify_from_iter", "1", "--seed", "5", *extra])
    return train.Trainer(args, train.read_scene_for(args))


def test_joint_raster_keeps_densification_stats_from_rendering_loss(tiny_scene, tmp_path):
    """--seg_raster joint: one rasterisation for colour and features; segmentation gradients move geometry,
    but the screen-space statistics that drive densification equal the separate-call run's."""
    sep = _trainer(tiny_scene, tmp_path, "--seg_raster", "separate")
    joint = _trainer(tiny_scene, tmp_path, "--seg_raster", "joint")
    means0 = sep.model.params["means"].detach().clone()
    assert torch.equal(means0, joint.model.params["means"].detach())
    ls, lj = sep.train_step(1), joint.train_step(1)
    assert "cluster" in ls and "cluster" in lj
    g_sep, g_joint = sep.strategy_state["grad2d"], joint.strategy_state["grad2d"]
    assert g_sep.abs().sum() > 0
    torch.testing.assert_close(g_joint, g_sep, rtol=1e-4, atol=1e-7)
    assert torch.equal(sep.strategy_state["count"], joint.strategy_state["count"])
    # Segmentation gradients reach geometry only in the joint call: the means move differently.
    d = (joint.model.params["means"].detach() - sep.model.params["means"].detach()).abs().max()
    assert d > 1e-7, float(d)


def test_the_weighted_total_is_one_dot_product_equal_to_the_sum(tiny_scene, tmp_path):
    """The step's total is the weighted sum of its named terms, built as one dot product (two autograd nodes);
    each term's gradient is its weight."""
    t = _trainer(tiny_scene, tmp_path, "--lambda_3d", "0.25")
    terms = {k: torch.tensor(0.1 * (i + 1), requires_grad=True) for i, k in enumerate(["render", "cluster", "3d"])}
    total = t.weighted_total(terms)
    assert total.grad_fn.name() == "DotBackward0"
    want = sum(t.weights[k] * v.detach() for k, v in terms.items())
    torch.testing.assert_close(total.detach(), want, rtol=1e-6, atol=0)
    total.backward()
    for k, v in terms.items():
        assert float(v.grad) == pytest.approx(t.weights[k]), k
    assert t.weights["3d"] == 0.25
    one = t.weighted_total({"render": terms["render"]})
    assert float(one.detach()) == pytest.approx(0.1)
    # where the loss stage's graph weighted its terms (StepTerms.total, the terms detached), a term from outside the
    # stage (L_3D) is added to that sum
    from segmentation.stage import StepTerms

    graphed = torch.tensor(0.7, requires_grad=True)
    l3d = torch.tensor(0.2, requires_grad=True)
    staged = StepTerms({"render": torch.tensor(0.1)}, total=graphed)
    staged["3d"] = l3d  # added after the stage, as compute_losses adds it: not in ``covered``
    both = t.weighted_total(staged)
    assert float(both.detach()) == pytest.approx(0.7 + 0.25 * 0.2)
    both.backward()
    assert float(graphed.grad) == 1.0 and float(l3d.grad) == 0.25
    assert t.weighted_total(StepTerms({"render": torch.tensor(0.1)}, total=graphed)) is graphed


def test_seg_interval_trains_segmentation_on_selected_steps_only(tiny_scene, tmp_path):
    """--seg_interval 2: odd steps are plain 3DGS steps (colour only; the embedding and its heads keep their
    values), even steps the full objective, the same as a --seg_interval 1 run's step from the same state."""
    t = _trainer(tiny_scene, tmp_path, "--seg_interval", "2")
    emb0, sh0 = t.model.feature("embedding").detach().clone(), t.model.params["sh0"].detach().clone()
    odd = t.train_step(1)
    assert set(odd) == {"render", "loss", "psnr"}
    assert torch.equal(t.model.feature("embedding"), emb0)  # no gradient, no Adam update
    assert not torch.equal(t.model.params["sh0"], sh0)  # colour trained
    even = t.train_step(2)
    assert "cluster" in even and not torch.equal(t.model.feature("embedding"), emb0)
    every = _trainer(tiny_scene, tmp_path, "--seg_interval", "1")
    assert {"cluster", "semantic"} <= set(every.train_step(1))
    r = _cli("-s", tiny_scene, "-m", str(tmp_path / "o"), "--iterations", "1", "--seg_interval", "0")
    assert r.returncode == 2 and "--seg_interval 0" in r.stderr and "Traceback" not in r.stderr
    r = _cli("-s", tiny_scene, "-m", str(tmp_path / "o"), "--iterations", "1", "--cluster_tune_workers", "-1")
    assert r.returncode == 2 and "--cluster_tune_workers -1" in r.stderr and "Traceback" not in r.stderr


def test_log_file_and_profile_name_the_loss_terms(tiny_scene, tmp_path):
    """train_log.jsonl gets every named term (weighted in one line into `loss`); --profile times each stage."""
    from training.log import read_log

    out = str(tmp_path / "m")
    stats = _run(["-s", tiny_scene, "-m", out, "--iterations", "40", "--log_interval", "10", "--profile",
                  "--test_iterations", "-1", "--quiet", "--init_points", "1000", "--densify_from_iter", "10",
                  "--densification_interval", "10", "--densify_until_iter", "20", "--l3d_from_iter", "25",
                  "--triplet_from_iter", "25", "--lambda_cluster", "0.3"])
    records = read_log(out)
    assert [r["iteration"] for r in records] == [10, 20, 30, 40]
    assert {"render", "cluster", "semantic", "loss", "psnr", "num_gaussians", "seconds"} <= set(records[0])
    assert "triplet" not in records[1] and {"triplet", "3d"} <= set(records[-1])
    last = records[-1]
    expected = last["render"] + 0.3 * last["cluster"] + 0.1 * (last["triplet"] + last["3d"] + last["semantic"])
    assert last["loss"] == pytest.approx(expected, rel=1e-5)
    prof = stats["profile"]
    assert {"data", "render", "losses", "loss/3d", "backward", "optimizer", "densify"} <= set(prof)
    assert prof["render"]["count"] == 40 and prof["loss/3d"]["count"] == 16
    assert all(p["total_s"] >= 0 for p in prof.values())
    saved = json.load(open(os.path.join(out, "train_stats.json")))
    assert saved["profile"].keys() == prof.keys() and saved["optimizer"] == "adam" and saved["data_device"] == "cpu"
    assert saved["iterations_per_second"] > 0
    assert saved["step_kernels"] is False  # CUDA only: PyTorch's operators on the CPU


def test_optimizer_and_data_device_choices():
    from scene import resolve_data_device
    from training.optim import resolve_optimizer

    cpu = torch.device("cpu")
    assert resolve_optimizer("auto", cpu) == "adam" and resolve_optimizer("adam", cpu) == "adam"
    for kind in ("fused", "selective"):
        with pytest.raises(ValueError, match="--optimizer adam"):
            resolve_optimizer(kind, cpu)
    assert resolve_optimizer("auto", torch.device("cuda")) == "fused"
    assert resolve_data_device("auto", cpu, 10**12) == cpu
    assert resolve_data_device("cpu", cpu, 1) == cpu


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("optimizer,layout,l3d_grad,graph", [
    ("fused", "separate", "auto", "auto"), ("selective", "separate", "auto", "auto"),
    ("adam", "separate", "auto", "auto"), ("fused", "packed", "auto", "auto"), ("fused", "packed", "kernel", "auto"),
    ("fused", "packed", "auto", "on")])
def test_gpu_optimizers_survive_densification(tiny_scene, tmp_path, optimizer, layout, l3d_grad, graph):
    """Fused Adam and SelectiveAdam keep working while gsplat's strategy grows, splits, prunes and
    resets opacity (it replaces parameters and carries their optimiser state over); so do the packed
    feature layout, L_3D's gradient added by its kernel after the backward, and fused Adam replayed as a CUDA graph
    after densification."""
    out = str(tmp_path / optimizer)
    stats = _run(["-s", tiny_scene, "-m", out, "--iterations", "300", "--test_iterations", "1", "300", "--quiet",
                  "--optimizer", optimizer, "--densify_from_iter", "50", "--densification_interval", "50",
                  "--opacity_reset_interval", "150", "--densify_until_iter", "250", "--l3d_from_iter", "200",
                  "--triplet_from_iter", "200", "--profile", "--feature_layout", layout, "--l3d_grad", l3d_grad,
                  "--optimizer_graph", graph])
    assert stats["optimizer"] == optimizer and stats["data_device"].startswith("cuda")
    # auto on CUDA: L_3D inside the graphed loss stage, its gradients handed straight to the backward (RESULTS.md 35)
    assert stats["l3d_grad"] == ("kernel" if l3d_grad == "kernel" else "graph")
    assert stats["loss_graph"]["direct"] is True
    if graph == "on":  # the 50 steps after densification: one sighting, then replays (the key holds no gradient)
        g = stats["optimizer_graph"]
        assert g["captures"] >= 1 and g["replays"] >= 45 and g["replays"] + g["eager"] == 51, g
    else:
        assert stats["optimizer_graph"] is None
    assert stats["step_kernels"] is True  # on by default, built (tests/test_step_ops.py compares them)
    # the loss stage was graphed, not silently run eagerly after a failed capture (RESULTS.md 31a)
    assert stats["loss_graph"]["failed"] is None and stats["loss_graph"]["graphed"] >= 1, stats["loss_graph"]
    assert stats["eval"]["300"]["test"]["psnr"] > stats["eval"]["1"]["test"]["psnr"] + 2.0
    ckpt = GaussianModel.load_ply(os.path.join(out, "point_cloud/iteration_300/point_cloud.ply"))
    assert ckpt.num_gaussians == stats["num_gaussians"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("extra", [[], ["--seg_scale", "0.5"], ["--l3d_grad", "kernel"],
                                   ["--l3d_grad", "autograd", "--loss_graph", "on"]])
def test_gpu_training_step_waits_for_the_gpu_once(tiny_scene, tmp_path, extra):
    """Issue 10: after densification a UniC-Lift step makes the host wait for the GPU once per
    rasterisation (two with --seg_scale), in gsplat's tile intersection (it reads the intersection count
    back to size its buffers), and nowhere else: every operation CUDA's sync debug mode flags is
    attributed to the line that issued it."""
    import traceback
    import warnings

    from benchmarks.profile_step import build_trainer

    t = build_trainer(tiny_scene, str(tmp_path / "m"), ["--iterations", "60", "--densify_until_iter", "20",
                                                          "--init_points", "800", *extra])
    for step in range(1, 31):
        t.train_step(step, with_stats=False)
    torch.cuda.synchronize()
    where = []

    def hook(message, category, filename, lineno, file=None, line=None):
        stack = [f"{os.path.basename(f.filename)}:{f.name}" for f in traceback.extract_stack()[:-1]]
        where.append(" <- ".join(reversed(stack[-4:])))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(31, 36):
                t.train_step(step, with_stats=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    # torch warns once per process that the sync debug mode is a prototype, from set_sync_debug_mode itself:
    # run alone, this test sees that warning (in the whole GPU suite an earlier test took it)
    other = [w for w in where if "isect_tiles" not in w and "__init__.py:set_sync_debug_mode" not in w.split(" <- ")[:2]]
    assert not other, "\n".join(other)
    assert len([w for w in where if "isect_tiles" in w]) <= 5 * (2 if "--seg_scale" in extra else 1), where
    assert t.l3d_after_backward == ("kernel" in extra) and t.objective.neighbor_due(31)


@pytest.mark.parametrize("with_radii", [False, True])
def test_sync_free_screen_stats_match_gsplat(with_radii):
    """training.densify.update_screen_stats == gsplat's DefaultStrategy._update_state (which syncs)."""
    from gsplat.strategy import DefaultStrategy

    from training.densify import update_screen_stats

    g = torch.Generator().manual_seed(0)
    N = 50
    means2d = torch.randn(1, N, 2, generator=g).requires_grad_()
    (means2d * torch.randn(1, N, 2, generator=g)).sum().backward()
    radii = torch.randint(0, 4, (1, N, 2), generator=g, dtype=torch.int32)
    info = {"width": 64, "height": 48, "n_cameras": 1, "radii": radii, "gaussian_ids": None, "means2d": means2d}
    ref = DefaultStrategy(refine_scale2d_stop_iter=10 if with_radii else 0)
    params = {"means": torch.zeros(N, 3)}
    s_ref, s_new = ref.initialize_state(), ref.initialize_state()
    for _ in range(2):
        ref._update_state(params, s_ref, info)
        update_screen_stats(s_new, info, N, with_radii=with_radii)
    assert torch.equal(s_new["grad2d"], s_ref["grad2d"]) and torch.equal(s_new["count"], s_ref["count"])
    assert s_ref["count"].max() == 2 and s_ref["count"].min() == 0
    if with_radii:
        torch.testing.assert_close(s_new["radii"], s_ref["radii"])


def test_fused_raster_matches_separate_calls(tiny_scene, tmp_path):
    """--seg_raster fused (one rasterisation) takes the same step as separate (two): geometry moved by
    colour alone, the same densification statistics, the same embedding update."""
    sep = _trainer(tiny_scene, tmp_path, "--seg_raster", "separate")
    fused = _trainer(tiny_scene, tmp_path, "--seg_raster", "fused")
    assert fused.raster_mode(1) == "fused" and sep.raster_mode(1) == "separate"
    ls, lf = sep.train_step(1), fused.train_step(1)
    for k in ls:
        torch.testing.assert_close(lf[k], ls[k], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused.strategy_state["grad2d"], sep.strategy_state["grad2d"], rtol=1e-4, atol=1e-7)
    assert torch.equal(sep.strategy_state["count"], fused.strategy_state["count"])
    for name in ("means", "scales", "quats", "opacities", "sh0", "embedding"):
        torch.testing.assert_close(fused.model.named_tensors()[name], sep.model.named_tensors()[name], rtol=1e-4,
                                   atol=1e-6)


def test_views_are_prepared_once_on_the_data_device(tiny_scene, tmp_path):
    t = _trainer(tiny_scene, tmp_path)
    v = t.views[0]
    assert v.cam is not None and v.cam.world_view.device == t.device and v.cam.K.dtype == torch.float32
    assert v.targets is not None and v.targets.instance.labels.device == t.data_device
    assert v.targets.instance.num_segments == int(v.instance[v.instance != 0].unique().numel())
    # The render camera gives the very numbers the numpy camera gives.
    from gaussian_renderer import camera_tensors

    for a, b in zip(camera_tensors(v.render_camera, t.device, torch.float32),
                    camera_tensors(v.camera, t.device, torch.float32)):
        assert torch.equal(a, b)


# ----- checkpoints: Ctrl-C, kill -9, scene checks, the folder lock ------------------------------------
_RESUME_ARGS = ["--iterations", "60", "--densify_from_iter", "10", "--densification_interval", "10",
                "--opacity_reset_interval", "40", "--test_iterations", "-1", "--quiet", "--seed", "3",
                "--l3d_from_iter", "30", "--triplet_from_iter", "30", "--densify_until_iter", "45",
                "--init_points", "2000"]


@pytest.fixture(scope="module")
def full_run(tiny_scene, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full") / "m")
    assert _run(["-s", tiny_scene, "-m", out, *_RESUME_ARGS])["feature_layout"] == "packed"  # auto's choice
    return GaussianModel.load_ply(os.path.join(out, "point_cloud/iteration_60/point_cloud.ply"))


def _assert_same_model(a, folder):
    b = GaussianModel.load_ply(os.path.join(folder, "point_cloud/iteration_60/point_cloud.ply"))
    assert a.num_gaussians == b.num_gaussians
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k


def test_ctrl_c_finishes_the_step_and_resume_is_exact(tiny_scene, tmp_path, monkeypatch, full_run):
    """SIGINT in the middle of iteration 35: the iteration completes, the checkpoint is labelled 35,
    and resuming from it gives the uninterrupted run's model exactly."""
    import signal

    real_backward = train.Trainer.backward

    def backward_with_ctrl_c(self, total, losses, out, mode, step):
        if step == 35:  # rendered and losses computed; backward, optimiser step, densification still to do
            signal.raise_signal(signal.SIGINT)
        return real_backward(self, total, losses, out, mode, step)

    out = str(tmp_path / "m")
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in the background (nohup, CI)
    monkeypatch.setattr(train.Trainer, "backward", backward_with_ctrl_c)
    with pytest.raises(SystemExit) as e:
        _run(["-s", tiny_scene, "-m", out, *_RESUME_ARGS])
    assert e.value.code == 130
    assert sorted(f for f in os.listdir(out) if f.startswith("chkpnt")) == ["chkpnt35.pth"]
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    assert not os.path.exists(os.path.join(out, ".train.lock"))
    monkeypatch.setattr(train.Trainer, "backward", real_backward)
    assert train.load_checkpoint(os.path.join(out, "chkpnt35.pth"), "cpu")["iteration"] == 35
    _run(["-s", tiny_scene, "-m", out, *_RESUME_ARGS, "--start_checkpoint", os.path.join(out, "chkpnt35.pth")])
    _assert_same_model(full_run, out)


def test_feature_layouts_train_the_same_model_bit_for_bit_and_resume_in_either_layout(tiny_scene, tmp_path, full_run):
    """--feature_layout packed (auto's choice here: embedding and semantic logits as one parameter whose first 3
    columns take the colour; no concatenation, no gradient copies) takes exactly the separate layout's steps on the
    CPU, through densification, L_3D, the triplet term and an opacity reset. Checkpoints hold the features by name:
    resumed packed or separate, the run ends on the uninterrupted model exactly."""
    out = str(tmp_path / "separate")
    stats = _run(["-s", tiny_scene, "-m", out, *_RESUME_ARGS, "--feature_layout", "separate",
                  "--checkpoint_iterations", "35"])
    assert stats["feature_layout"] == "separate"
    _assert_same_model(full_run, out)
    for layout in ("separate", "packed"):
        folder = str(tmp_path / f"resumed_{layout}")
        _run(["-s", tiny_scene, "-m", folder, *_RESUME_ARGS, "--feature_layout", layout, "--checkpoint_iterations",
              "45", "--start_checkpoint", os.path.join(out, "chkpnt35.pth")])
        _assert_same_model(full_run, folder)
    ckpt = train.load_checkpoint(os.path.join(tmp_path / "resumed_packed", "chkpnt45.pth"), "cpu")
    assert {"embedding", "semantic"} <= set(ckpt["optimizers"]) and "packed_features" not in ckpt["optimizers"]
    assert {"embedding", "semantic"} <= set(ckpt["model"]["params"])


def test_packed_feature_layout_refuses_what_it_cannot_train_in_one_line(tiny_scene, tmp_path):
    for extra, words in ((["--semantic_lr", "0.01"], ["--semantic_lr 0.01", "--feature_layout separate"]),
                         (["--sigmoid_where", "gaussian"], ["--sigmoid_where rendered"])):
        with pytest.raises(train.SceneError) as e:
            _trainer(tiny_scene, tmp_path, "--feature_layout", "packed", *extra)
        assert len(str(e.value).splitlines()) == 1 and all(w in str(e.value) for w in words), str(e.value)
    t = _trainer(tiny_scene, tmp_path, "--feature_layout", "packed", "--no-use_semantic", "--semantic_lr", "0.01")
    assert t.model.packing.names == ("embedding",) and list(t.optimizers).count("packed_features") == 1
    assert _trainer(tiny_scene, tmp_path).model.packing.names == ("embedding", "semantic")  # auto: packed
    for extra in (["--semantic_lr", "0.01"], ["--sigmoid_where", "gaussian"]):  # auto: separate where packed cannot
        assert _trainer(tiny_scene, tmp_path, *extra).model.packing is None
    assert _trainer(tiny_scene, tmp_path, "--optimizer_graph", "on").adam_graph is None  # CUDA's fused Adam only


_KILL_DURING_SECOND_CHECKPOINT = """
import os, sys, torch
sys.path.insert(0, {root!r})
real_save, calls = torch.save, []
def save(obj, f, *a, **k):
    calls.append(1)
    if len(calls) == 2 and hasattr(f, "write"):   # the second checkpoint: half written, then kill -9
        f.write(b"PK\\x03\\x04 half a checkpoint"); f.flush(); os.kill(os.getpid(), 9)
    return real_save(obj, f, *a, **k)
torch.save = save
import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_kill_9_during_a_checkpoint_write_then_resume_latest(tiny_scene, tmp_path, full_run):
    out = str(tmp_path / "m")
    script = _KILL_DURING_SECOND_CHECKPOINT.format(root=ROOT)
    r = subprocess.run([sys.executable, "-c", script, "-s", tiny_scene, "-m", out, *_RESUME_ARGS,
                        "--checkpoint_every", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    names = os.listdir(out)
    assert "chkpnt_periodic20.pth" in names and "chkpnt_periodic40.pth" not in names
    assert any(n.startswith(".tmp-") for n in names) and ".train.lock" in names  # what kill -9 leaves
    # A truncated newer checkpoint (a copy cut short, a full disk) is skipped as well.
    open(os.path.join(out, "chkpnt50.pth"), "wb").write(b"PK\x03\x04 truncated")
    r = _cli("-s", tiny_scene, "-m", out, *_RESUME_ARGS, "--start_checkpoint", "latest")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipping" in r.stderr and "chkpnt50.pth" in r.stderr
    names = os.listdir(out)
    assert not any(n.startswith(".tmp-") for n in names) and ".train.lock" not in names
    _assert_same_model(full_run, out)


def test_resume_refuses_other_scene_or_corrupt_checkpoint_and_busy_folder(tiny_scene, tmp_path):
    src = str(tmp_path / "src")
    _run(["-s", tiny_scene, "-m", src, "--iterations", "2", "--checkpoint_iterations", "2", "--test_iterations",
          "-1", "--quiet", "--init_points", "500"])
    ckpt = os.path.join(src, "chkpnt2.pth")
    base = ["-s", tiny_scene, "--iterations", "3", "--test_iterations", "-1", "--quiet", "--init_points", "500"]
    r = _cli(*base, "-m", str(tmp_path / "a"), "--emb_dim", "8", "--start_checkpoint", ckpt)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert ckpt in r.stderr and "embedding_dim" in r.stderr
    data = open(ckpt, "rb").read()
    bad = str(tmp_path / "bad.pth")
    open(bad, "wb").write(data[: len(data) // 3])
    r = _cli(*base, "-m", str(tmp_path / "b"), "--start_checkpoint", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr and bad in r.stderr and "truncated" in r.stderr
    # A folder held by a live train.py (our own process stands in for it) is refused, untouched.
    busy = str(tmp_path / "busy")
    os.makedirs(busy)
    open(os.path.join(busy, ".train.lock"), "w").write(f"{os.getpid()}\n")
    r = _cli(*base, "-m", busy)
    assert r.returncode == 2 and "in use by another train.py" in r.stderr and "Traceback" not in r.stderr
    assert os.listdir(busy) == [".train.lock"]


def _nan_render_loss_from(first_step):
    """A Trainer.compute_losses whose render term turns NaN from ``first_step`` on."""
    real = train.Trainer.compute_losses

    def poisoned(self, step, view, out, seg_out):
        losses = real(self, step, view, out, seg_out)
        if step >= first_step:
            losses["render"] = losses["render"] * float("nan")
        return losses

    return poisoned


def _diverging_run(tiny_scene, tmp_path, monkeypatch, capsys, patch, *extra):
    monkeypatch.setattr(train.Trainer, *patch)
    rc = train.main(["-s", tiny_scene, "-m", str(tmp_path / "nan"), "--iterations", "60", "--quiet",
                     "--log_interval", "10", "--test_iterations", "-1", "--init_points", "1000",
                     "--no-use_semantic", *extra])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("l3d_from,layout", [("1000", "separate"), ("30", "separate"), ("1000", "packed")])
def test_nan_loss_term_stops_training_naming_term_iteration_and_parameters(tiny_scene, tmp_path, monkeypatch,
                                                                          capsys, l3d_from, layout):
    poisoned = _nan_render_loss_from(25)
    rc, err = _diverging_run(tiny_scene, tmp_path, monkeypatch, capsys, ("compute_losses", poisoned),
                             "--l3d_from_iter", l3d_from, "--feature_layout", layout)
    assert rc == 3 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "iteration 30" in err and "finite at iteration 20" in err, err
    if l3d_from == "30":  # the L3D neighbour graph meets the NaN means before the read-back: named too
        assert "stopped by: neighbor_graph" in err, err
    else:
        assert "render = nan" in err, err
    assert "means" in err and "no checkpoint" in err, err  # NaN gradients reached the parameters
    assert "packed_features" not in err, err  # features are named as in the separate layout
    assert not os.path.isdir(str(tmp_path / "nan" / "point_cloud" / "iteration_60"))


def test_nonfinite_loss_with_finite_parameters_writes_a_checkpoint(tiny_scene, tmp_path, monkeypatch, capsys):
    real = train.Trainer.train_step

    def inf_stat(self, step, with_stats=True):  # a term overflows in the read-back only
        stats = real(self, step, with_stats)
        if step >= 35 and stats:
            stats["render"] = stats["render"] + float("inf")
        return stats

    rc, err = _diverging_run(tiny_scene, tmp_path, monkeypatch, capsys, ("train_step", inf_stat), "--detect_anomaly")
    assert rc == 3 and "iteration 35" in err and "render = inf" in err and "checkpoint written" in err, err
    path = err.split("checkpoint written to ")[1].split(";")[0]
    assert os.path.isfile(path)
    state = train.load_checkpoint(path, "cpu")
    assert state["iteration"] == 35  # --detect_anomaly reads back every iteration: the first bad one
    assert all(torch.isfinite(v).all() for v in state["model"].values() if torch.is_tensor(v))


def test_long_cpu_run_prints_an_estimate_and_suggests_the_short_schedule(tiny_scene, tmp_path, monkeypatch, capsys):
    class Enough(Exception):
        pass

    real = train.Trainer.train_step

    def stop_after_estimate(self, step, with_stats=True):
        if step > 22:
            raise Enough
        return real(self, step, with_stats)

    monkeypatch.setattr(train.Trainer, "train_step", stop_after_estimate)
    with pytest.raises(Enough):
        _run(["-s", tiny_scene, "-m", str(tmp_path / "long"), "--quiet", "--init_points", "500",
              "--no-use_semantic", "--test_iterations", "-1"])  # the full 30k schedule, on the CPU
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("CPU run:"))
    assert "29979 more iterations" in line and "--iterations 3000" in line, line
    value, unit = line.split("at least ")[1].split()[:2]
    assert float(value) > 0 and unit in ("h", "min"), line


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_checkpoint_loads_with_weights_only_and_resumes(tiny_scene, tmp_path):
    """On the GPU a checkpoint holds the CUDA RNG states and fused-Adam states: all load with
    weights_only=True, and --start_checkpoint latest resumes to the end."""
    out = str(tmp_path / "m")
    args = ["-s", tiny_scene, "-m", out, "--iterations", "60", "--test_iterations", "-1", "--quiet",
            "--densify_from_iter", "10", "--densification_interval", "10", "--densify_until_iter", "45",
            "--l3d_from_iter", "30", "--triplet_from_iter", "30", "--checkpoint_every", "20"]
    _run(args)
    names = sorted(f for f in os.listdir(out) if f.startswith("chkpnt"))
    assert names == ["chkpnt_periodic20.pth", "chkpnt_periodic40.pth"]
    state = torch.load(os.path.join(out, names[-1]), map_location="cuda", weights_only=True)
    assert state["iteration"] == 40 and state["rng"]["cuda"] is not None
    stats = _run(args + ["--start_checkpoint", "latest"])
    assert stats["iterations"] == 60 and stats["num_gaussians"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_nan_loss_stops_at_the_read_back(tiny_scene, tmp_path, monkeypatch, capsys):
    """On CUDA the check rides on the stats read-back (gsplat, fused Adam): same one-line stop."""
    poisoned = _nan_render_loss_from(25)
    rc, err = _diverging_run(tiny_scene, tmp_path, monkeypatch, capsys, ("compute_losses", poisoned),
                             "--l3d_from_iter", "1000", "--device", "cuda")
    assert rc == 3 and "iteration 30" in err and "render = nan" in err and "Traceback" not in err, err


def test_seg_scale_renders_features_and_their_masks_smaller(tiny_scene, tmp_path):
    """--seg_scale 0.5: the features render at half size from the geometry-detached model, their masks are
    the views' masks at that size (nearest pixel), and the colour step, the geometry and the densification
    statistics are those of the fused one-rasterisation step."""
    from scene import nearest_resize
    from segmentation.targets import prepare_targets

    half = _trainer(tiny_scene, tmp_path, "--seg_scale", "0.5")
    fused = _trainer(tiny_scene, tmp_path, "--seg_raster", "fused")
    assert half.raster_mode(1) == "scaled" and fused.raster_mode(1) == "fused"
    view = next(v for v in half.views if v.instance is not None)
    H, W = view.image.shape[:2]
    h, w = round(H * 0.5), round(W * 0.5)
    assert (view.seg_cam.width, view.seg_cam.height) == (w, h)
    small = nearest_resize(view.instance, w, h)
    assert small.shape == (h, w) and torch.equal(small, view.instance[1::2, 1::2])  # centres of 2x2 blocks
    expected = prepare_targets(small, None if view.valid is None else nearest_resize(view.valid, w, h),
                               ignore_id=half.objective.ignore_id, device=view.targets.instance.labels.device)
    assert torch.equal(view.targets.instance.labels, expected.labels)
    assert view.targets.instance.labels.numel() == h * w

    emb0 = half.model.feature("embedding").detach().clone()
    out, seg_out, mode = half.render_view(view, half.background(), 1)
    assert mode == "scaled" and out.rgb.shape[:2] == (H, W) and seg_out.rgb is None
    assert seg_out.features["embedding"].shape[:2] == (h, w)
    lh, lf = half.train_step(1), fused.train_step(1)
    assert {"cluster", "semantic"} <= set(lh)
    torch.testing.assert_close(lh["render"], lf["render"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(half.strategy_state["grad2d"], fused.strategy_state["grad2d"], rtol=1e-4, atol=1e-7)
    for name in ("means", "scales", "quats", "opacities", "sh0"):
        torch.testing.assert_close(half.model.params[name], fused.model.params[name], rtol=1e-4, atol=1e-6)
    assert not torch.equal(half.model.feature("embedding"), emb0)  # the embedding trained, on other pixels
    assert not torch.allclose(half.model.feature("embedding"), fused.model.feature("embedding"), atol=1e-6)
    for bad, words in ((["--seg_scale", "0"], "--seg_scale 0.0: must be in (0, 1]"),
                       (["--seg_scale", "0.5", "--seg_geometry_grad"], "does not combine with --seg_geometry_grad")):
        r = _cli("-s", tiny_scene, "-m", str(tmp_path / "o"), "--iterations", "1", *bad)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_semantic_head_vote_renders_no_semantic_channel_and_saves_the_masks_classes(tiny_scene, tmp_path):
    """--semantic_head vote: the model trains without a semantic parameter (no channel rendered, no loss term);
    a save lifts each Gaussian's class shares from the training masks (segmentation.labels.semantic_votes)
    into the PLY and leaves the training model as it was, so training goes on."""
    from segmentation.labels import semantic_votes

    t = _trainer(tiny_scene, tmp_path, "--semantic_head", "vote")
    assert "semantic" not in t.model.params and t.vote_classes == t.info.num_classes > 1
    assert set(t.objective.features(t.model)) == {"embedding"}
    stats = t.train_step(1)
    assert "cluster" in stats and "semantic" not in stats
    t.save(1)
    assert "semantic" not in t.model.params
    m = GaussianModel.load_ply(os.path.join(t.point_cloud_dir(1), "point_cloud.ply"))
    shares = m.params["semantic"]
    assert shares.shape == (t.model.num_gaussians, t.info.num_classes)
    torch.testing.assert_close(shares.sum(1), torch.ones(len(shares)), atol=1e-5, rtol=0)
    torch.testing.assert_close(shares, semantic_votes(t.model, t.views, t.info.num_classes).float(), atol=1e-6, rtol=0)
    assert "cluster" in t.train_step(2)  # training goes on after the save


@pytest.mark.parametrize("layout", ["separate", "packed"])
def test_l3d_after_the_backward_trains_the_same_model(tiny_scene, tmp_path, layout):
    """``Trainer.l3d_after_backward`` (--l3d_grad kernel on CUDA: L_3D's kernel adds its weighted gradient to the
    embedding's .grad after the step's backward) takes exactly the steps of L_3D as one term of the step's loss. On
    the CPU, where the kernel does not apply, the term runs after the backward with a backward of its own
    (neighbor_term's fallback), which adds the same numbers to the same .grad: the models stay equal bit for bit,
    and the logged terms too (the total to rounding: it sums them in another order)."""
    extra = ("--l3d_from_iter", "3", "--densify_until_iter", "2", "--feature_layout", layout, "--l3d_grad", "kernel")
    inline, late = _trainer(tiny_scene, tmp_path, *extra), _trainer(tiny_scene, tmp_path, *extra)
    assert inline.l3d_after_backward is False  # no kernel on the CPU
    late.l3d_after_backward = True
    for step in range(1, 9):
        a, b = inline.train_step(step), late.train_step(step)
        assert set(a) == set(b) and ("3d" in a) == (step >= 3), (step, set(a))
        for k in a:  # the logged total sums the same weighted terms in another order: equal to rounding
            assert torch.equal(a[k], b[k]) if k != "loss" else torch.allclose(a[k], b[k], rtol=1e-6, atol=0), (step, k)
    assert float(a["3d"]) > 0.0
    for name, value in inline.model.named_tensors().items():
        assert torch.equal(value, late.model.named_tensors()[name]), name


def _l3d_in_stage_runs(tiny_scene, tmp_path, layout, device, graphs, *more):
    """--l3d_grad autograd with --loss_graph on (L_3D an autograd term after the stage, the CPU's default and the
    GPU's until RESULTS.md 35) and --l3d_grad graph (L_3D a term of the stage from the end of densification), trained
    side by side for 8 steps: [(autograd step stats, graph step stats)], the two trainers."""
    extra = ("--l3d_from_iter", "3", "--densify_until_iter", "4", "--feature_layout", layout, "--device", device)
    base = _trainer(tiny_scene, tmp_path, *extra, "--l3d_grad", "autograd", "--loss_graph", "on")
    staged = _trainer(tiny_scene, tmp_path, *extra, "--l3d_grad", "graph", *more)
    assert staged.l3d_in_stage and not base.l3d_in_stage
    staged.stages.graphs = graphs  # on the CPU: TotalGraph's eager twin, the steps a CUDA graph replays
    # each step's stats copied at once, as the training loop reads them back at once: graphed terms are views of
    # the graph's outputs, which the next replay overwrites
    steps = [tuple({k: v.clone() for k, v in t.train_step(step).items()} for t in (base, staged))
             for step in range(1, 9)]
    return steps, base, staged


@pytest.mark.parametrize("layout,graphs,direct", [("separate", False, False), ("packed", False, False),
                                                  ("packed", True, False), ("packed", True, True)])
def test_l3d_in_the_loss_stage_trains_the_same_model(tiny_scene, tmp_path, monkeypatch, layout, graphs, direct):
    """--l3d_grad graph: once densification has stopped, L_3D is a term of the loss stage (its one CUDA graph reads
    the embedding and the step's pairs); before, and in the default, it is an autograd term of its own. The same
    pairs, the same terms and total, and the same model, bit for bit: eagerly, and through ``TotalGraph``'s steps
    (``graphs``: its eager twin, what the CUDA graph replays), also where the trainer hands the graph's gradients
    straight to the backward (``direct``: --loss_graph direct)."""
    handed = []  # the backward calls that got the graph's gradients directly
    real = torch.autograd.backward

    def spy(tensors, *args, **kwargs):
        if isinstance(tensors, list):  # Tensor.backward passes one tensor
            handed.append(len(tensors))
        return real(tensors, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", spy)
    steps, base, staged = _l3d_in_stage_runs(tiny_scene, tmp_path, layout, "cpu", graphs,
                                             "--loss_graph", "direct" if direct else "on")
    assert (len(handed) == 8 and min(handed) >= 2) if direct else not handed  # the image, the head (+ L_3D)
    for step, (a, b) in enumerate(steps, start=1):
        assert set(a) == set(b) and ("3d" in a) == (step >= 3), (step, set(a))
        for k in a:
            assert torch.equal(a[k], b[k]), (step, k)
    assert float(a["3d"]) > 0.0 and base.objective.edges_offset == staged.objective.edges_offset
    in_stage = [k for k in staged.stages.stages if "3d" in k[3]]
    assert in_stage and all(k[3][-1] == "3d" for k in in_stage)  # from step 4 (densification over), not before
    assert any("3d" in k[3] for k in staged.stages.graphed) == graphs
    for name, value in base.model.named_tensors().items():
        other = staged.model.named_tensors()[name]
        assert torch.equal(value, other), (name, (value - other).abs().max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("direct", [False, True])
def test_gpu_l3d_in_the_loss_stages_graph_trains_the_same_model(tiny_scene, tmp_path, direct):
    """--l3d_grad graph on CUDA: L_3D inside the loss stage's graph from the end of densification gives the default's
    terms and model (to the rounding of atomics and summation order), and the stage is graphed with it; also with
    the graph's gradients handed straight to the backward (``direct``: --loss_graph direct, the static gradient
    buffers going into the render's backward and the heads' .grad)."""
    steps, base, staged = _l3d_in_stage_runs(tiny_scene, tmp_path, "packed", "cuda", True,
                                             "--loss_graph", "direct" if direct else "on")
    for step, (a, b) in enumerate(steps, start=1):
        assert set(a) == set(b) and ("3d" in a) == (step >= 3), (step, set(a))
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
    assert any("3d" in k[3] for k in staged.stages.graphed) and staged.stages.failed is None
    for name, value in base.model.named_tensors().items():
        torch.testing.assert_close(staged.model.named_tensors()[name], value, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["separate", "packed"])
def test_gpu_l3d_after_the_backward_gives_the_inline_terms_gradients(tiny_scene, tmp_path, layout):
    """--l3d_grad kernel on CUDA: L_3D runs after the backward, its kernel adding the weighted gradient to the
    embedding's .grad (``Trainer.l3d_after_backward``). One step's gradients, both ways from the same state and the
    same pairs: equal to the atomic adds' rounding, and the logged term too."""
    t = _trainer(tiny_scene, tmp_path, "--device", "cuda", "--l3d_from_iter", "1", "--densify_until_iter", "0",
                 "--triplet_from_iter", "100000", "--feature_layout", layout, "--l3d_grad", "kernel",
                 "--loss_graph", "on")
    assert t.l3d_after_backward is True and (t.model.packing is not None) == (layout == "packed")
    view, bg, step = t.views[0], t.background(), 5

    def one_step(after: bool):
        t.l3d_after_backward = after
        offset = t.objective.edges_offset
        out, seg_out, mode = t.render_view(view, bg, step)
        losses = t.compute_losses(step, view, out, seg_out)
        assert ("3d" in losses) != after  # inline: a term of the loss; after: added by the backward
        t.backward(t.weighted_total(losses), losses, out, mode, step)
        t.objective.edges_offset = offset  # the next call takes the same pairs
        grads = {n: p.grad.clone() for n, p in t.model.params.items() if p.grad is not None}
        for p in t.model.params.values():
            p.grad = None
        return grads, float(losses["3d"].detach())

    inline, l_inline = one_step(False)
    late, l_late = one_step(True)
    assert l_inline > 0 and abs(l_late - l_inline) <= 1e-5 * l_inline and set(late) == set(inline)
    for name in inline:
        torch.testing.assert_close(late[name], inline[name], rtol=1e-4, atol=1e-9)
    emb = "packed_features" if layout == "packed" else "embedding"
    assert inline[emb].abs().max() > 0
