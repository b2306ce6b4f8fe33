"""Short runs get a schedule that fits them; a save right after an opacity reset is warned about."""
import os

import pytest

import train
from training.schedule import DEFAULT_ITERATIONS, SCHEDULE_FLAGS, reset_steps, saves_after_reset


def _args(*argv):
    return train.prepare_args(["-s", "scene", *argv])


def test_short_run_scales_the_schedule_and_says_so(capsys):
    a = _args("--iterations", "3000")
    out, err = capsys.readouterr()
    assert "schedule scaled" in out and out.count("\n") == 1 and err == ""
    assert a.densify_until_iter == 1500 and a.position_lr_max_steps == 3000
    assert 0 < a.densify_from_iter < a.densify_until_iter
    resets = reset_steps(a.opacity_reset_interval, a.densify_until_iter)
    assert len(resets) >= 2 and max(resets) <= 3000 - 300  # none within a few hundred steps of the end
    assert saves_after_reset(a) == []
    # triplet / L3D start when densification stops (the scaled one)
    trainer_seg = train.SegmentationParams.extract(a)
    assert trainer_seg.triplet_from_iter == -1  # resolved to densify_until_iter by the Trainer


@pytest.mark.parametrize("n", [10, 300, 1000, 7000, 29_999])
def test_scaled_schedule_never_saves_right_after_a_reset(n, capsys):
    a = _args("--iterations", str(n), "--save_iterations", str(n // 2), str(n))
    assert saves_after_reset(a) == [], (n, a.opacity_reset_interval, a.densify_until_iter)
    assert "warning" not in capsys.readouterr().err


def test_full_schedule_and_explicit_flags_are_left_alone(capsys):
    a = _args()
    assert a.iterations == DEFAULT_ITERATIONS and a.densify_until_iter == 15_000 and a.opacity_reset_interval == 3000
    assert capsys.readouterr().out == ""
    for flag in SCHEDULE_FLAGS:  # any one schedule flag (even abbreviated or equal to the default) disables it
        value = {"densify_until_iter": "2000", "opacity_reset_interval": "3000"}.get(flag, "100")
        a = _args("--iterations", "3000", f"--{flag[:-2]}", value)
        assert a.position_lr_max_steps == (100 if flag == "position_lr_max_steps" else 30_000), flag
        assert "scaled" not in capsys.readouterr().out


def test_explicit_flags_that_save_on_a_reset_get_one_warning(capsys):
    _args("--iterations", "3000", "--densification_interval", "100")  # the 3DGS trap: reset at 3000
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning:") and "3000" in err and "reset" in err
    _args("--iterations", "3000", "--densify_until_iter", "2000")  # last reset never fires: fine
    assert capsys.readouterr().err == ""
    _args("--save_iterations", "6100", "--quiet")  # 100 steps after the reset at 6000, even with --quiet
    assert "6100" in capsys.readouterr().err


def test_zero_iterations_is_refused():
    assert train.main(["-s", "scene", "--iterations", "0"]) == 2


@pytest.mark.slow
def test_short_run_saves_a_model_that_is_not_black(tiny_scene, tmp_path):
    """--iterations alone (scaled) vs the same run ending on an opacity reset, as 3DGS defaults do."""
    common = ["-s", tiny_scene, "--iterations", "240", "--test_iterations", "1", "240", "--quiet",
              "--no-use_semantic", "--init_points", "2000"]
    good = train.training(train.prepare_args(common + ["-m", str(tmp_path / "good")]))
    trap = train.training(train.prepare_args(common + ["-m", str(tmp_path / "trap"), "--densify_from_iter", "1000",
                                                       "--densify_until_iter", "241", "--opacity_reset_interval",
                                                       "240"]))
    start = good["eval"]["1"]["test"]["psnr"]
    scaled, dark = good["eval"]["240"]["test"]["psnr"], trap["eval"]["240"]["test"]["psnr"]
    assert scaled > 18.0 and scaled > start + 4.0, (start, scaled)  # measured: 13.4 -> ~20 at 300 iterations
    assert dark < scaled - 5.0, (dark, scaled)  # the trap this guards against (measured ~10)
    assert os.path.isfile(str(tmp_path / "good" / "point_cloud" / "iteration_240" / "point_cloud.ply"))
