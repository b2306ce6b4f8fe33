"""viewer/: picking (a ray against synthetic Gaussians), colour modes, the Viewer's actions on a
synthetic model (no browser), and the CLI's one-line errors. The browser test is test_viewer_browser.py."""
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from segmentation.decode import colorize_ids
from tests.test_objects import OBJECTS, STUFF, _model, _save
from tools import objects
from viewer.colours import highlight, instance_colours, mode_colours, rgb_from_sh0, semantic_colours
from viewer.picking import Picker, pick_gaussian, ray_alphas, rotation_matrices, unit_frames, unit_means

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDENT = torch.tensor([1.0, 0.0, 0.0, 0.0])


def _picker(means, scales, opac, quats=None):
    means = torch.tensor(means, dtype=torch.float32)
    N = means.shape[0]
    scales = torch.tensor(scales, dtype=torch.float32).reshape(N, -1).expand(N, 3)
    quats = IDENT.expand(N, 4) if quats is None else torch.tensor(quats, dtype=torch.float32)
    return Picker(means, quats, scales, torch.tensor(opac, dtype=torch.float32))


# ----- picking -------------------------------------------------------------------------------
def test_nearest_opaque_gaussian_wins():
    # three Gaussians on the +z axis at depths 2, 4, 6; the ray starts at the origin looking down +z
    p = _picker([[0, 0, 2], [0, 0, 4], [0, 0, 6]], [0.1, 0.1, 0.1], [0.9, 0.9, 0.9])
    assert p.pick([0, 0, 0], [0, 0, 1]) == 0
    # looking the other way from behind the last: the nearest is now the last one
    assert p.pick([0, 0, 8], [0, 0, -1]) == 2
    # direction norm does not matter
    assert p.pick([0, 0, 0], [0, 0, 7.5]) == 0


def test_translucent_front_gaussians_let_the_ray_through():
    # a faint haze (opacity 0.2) in front of an opaque one: accumulated alpha passes 0.5 only at the opaque one
    p = _picker([[0, 0, 2], [0, 0, 3], [0, 0, 5]], [0.1, 0.1, 0.1], [0.2, 0.2, 0.95])
    assert p.pick([0, 0, 0], [0, 0, 1]) == 2
    # two 0.3 Gaussians reach 1 - 0.7 * 0.7 = 0.51 >= 0.5 at the second
    p = _picker([[0, 0, 2], [0, 0, 3], [0, 0, 5]], [0.1, 0.1, 0.1], [0.3, 0.3, 0.95])
    assert p.pick([0, 0, 0], [0, 0, 1]) == 1


def test_never_opaque_ray_picks_the_largest_contribution_and_misses_are_minus_one():
    p = _picker([[0, 0, 2], [0, 0, 4]], [0.1, 0.1], [0.1, 0.3])
    assert p.pick([0, 0, 0], [0, 0, 1]) == 1  # 0.3 * 0.9 = 0.27 > 0.1
    assert p.pick([5, 5, 0], [0, 0, 1]) == -1  # passes far from both
    assert p.pick([0, 0, 10], [0, 0, 1]) == -1  # both behind the eye


def test_offset_ray_hits_by_mahalanobis_distance_not_centre_distance():
    # ray along z at x = 0.3: a wide flat Gaussian (sx 1) at depth 5 is hit, a thin one (sx 0.05) at depth 2 is not
    p = _picker([[0, 0, 2], [0, 0, 5]], [[0.05, 0.05, 0.05], [1.0, 1.0, 0.05]], [0.99, 0.99])
    assert p.pick([0.3, 0, 0], [0, 0, 1]) == 1
    t, alpha = ray_alphas(torch.tensor([0.3, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), p.means_u, p.unit,
                          p.opacities)
    assert t.tolist() == pytest.approx([2.0, 5.0], abs=1e-5)
    assert float(alpha[1]) == pytest.approx(0.99 * math.exp(-0.5 * 0.3 ** 2), rel=1e-5)
    assert float(alpha[0]) < 1e-7  # 6 sigma away


def test_rotation_is_respected():
    # one elongated Gaussian (sx 1, sy sz 0.05) rotated 90 degrees about z: long along y now
    q = [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]
    p = _picker([[0, 0, 3]], [[1.0, 0.05, 0.05]], [0.9], quats=[q])
    assert torch.allclose(rotation_matrices(torch.tensor([q]))[0] @ torch.tensor([1.0, 0, 0]),
                          torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert p.pick([0, 0.5, 0], [0, 0, 1]) == 0  # along its long axis: hit
    assert p.pick([0.5, 0, 0], [0, 0, 1]) == -1  # across it: miss
    # an oblique ray meets it at its closest approach
    assert p.pick([-3, 0.4, 0], [1, 0, 1]) == 0


def test_candidates_exclude_hidden_gaussians_and_pick_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    N = 400
    means = torch.rand(N, 3, generator=g) * 4 - 2
    quats = torch.randn(N, 4, generator=g)
    scales = torch.rand(N, 3, generator=g) * 0.3 + 0.02
    opac = torch.rand(N, generator=g)
    p = Picker(means, quats, scales, opac)
    first = p.pick([0, 0, -5], [0, 0, 1])
    assert first >= 0
    mask = torch.ones(N, dtype=torch.bool)
    mask[first] = False
    assert p.pick([0, 0, -5], [0, 0, 1], candidates=mask) not in (first, -1)
    # reference: dense samples along the ray (not the closed form), composited front to back
    R = rotation_matrices(quats).double()
    inv = R @ torch.diag_embed(1.0 / scales.double() ** 2) @ R.transpose(1, 2)  # [N, 3, 3] inverse covariances
    ts = torch.linspace(0, 12, 4001, dtype=torch.float64)  # [T]
    x = torch.tensor([0.0, 0, -5], dtype=torch.float64) + ts[:, None] * torch.tensor([0.0, 0, 1.0],
                                                                                      dtype=torch.float64)
    rel = x[None] - means.double()[:, None]  # [N, T, 3]
    m2 = torch.einsum("nti,nij,ntj->nt", rel, inv, rel)  # [N, T]
    k = m2.argmin(1)
    t_ref = ts[k]
    a_ref = (opac.double() * torch.exp(-0.5 * m2.gather(1, k[:, None])[:, 0])).clamp_max(0.99)
    ok = (a_ref >= 1 / 255) & (t_ref > 0)
    idx = torch.nonzero(ok).squeeze(1)[torch.argsort(t_ref[ok])]
    acc = 1 - torch.cumprod(1 - a_ref[idx], 0)
    ref = int(idx[torch.nonzero(acc >= 0.5)[0, 0]])
    assert first == ref


def test_pick_is_vectorised_and_fast_on_a_million_gaussians():
    import time

    g = torch.Generator().manual_seed(1)
    N = 1_000_000
    p = Picker(torch.randn(N, 3, generator=g), torch.randn(N, 4, generator=g), torch.full((N, 3), 0.01),
               torch.rand(N, generator=g))
    p.pick([0, 0, -10], [0, 0, 1])  # warm up
    t0 = time.perf_counter()
    assert p.pick([0, 0, -10], [0, 0, 1]) >= 0
    # one click on a 1M model: 0.2 s on 2 idle cores, up to 2 s on 2 cores shared by 17 processes;
    # a Python loop over the Gaussians takes minutes
    assert time.perf_counter() - t0 < 5.0


def test_pick_gaussian_takes_raw_tensors():
    means_t = torch.tensor([[0.0, 0, 1], [0.0, 0, 2]]).T
    unit = unit_frames(IDENT.expand(2, 4), torch.full((2, 3), 0.1))
    assert pick_gaussian(torch.zeros(3), torch.tensor([0.0, 0, 1]), unit_means(means_t, unit), unit,
                         torch.tensor([0.9, 0.9])) == 0


# ----- colours -------------------------------------------------------------------------------
def test_rgb_from_sh0_is_the_dc_colour():
    rgb = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]])
    sh0 = ((rgb - 0.5) / 0.28209479177387814)[:, None, :]
    assert np.allclose(rgb_from_sh0(sh0), rgb.numpy(), atol=1e-6)
    assert rgb_from_sh0(torch.full((1, 1, 3), 100.0)).max() == 1.0  # clamped


def test_instance_colours_match_the_overlay_palette_and_stuff_is_grey():
    ids = torch.tensor([0, 3, 3, 17])
    rgb = np.array([[0.9, 0.3, 0.3], [0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.2, 0.3, 0.4]], np.float32)
    col = instance_colours(ids, rgb)
    ref = colorize_ids(ids).numpy() / 255.0
    assert np.allclose(col[1:], ref[1:])  # the same colour per id as overlay/ and `list`
    assert np.allclose(col[1], col[2])  # an id's colour does not depend on the Gaussian's RGB
    assert np.allclose(col[0], col[0, 0]) and 0 < col[0, 0] < 0.5  # stuff: a dim grey
    assert not np.allclose(col[1], col[3])


def test_semantic_colours_are_one_per_class_and_modes_fall_back_to_rgb():
    from tools.contact_sheet import colorize_classes

    cls = torch.tensor([1, 5, 5, 2])
    col = semantic_colours(cls)
    assert np.allclose(col * 255, colorize_classes(cls.numpy()))
    assert np.allclose(col[1], col[2]) and not np.allclose(col[0], col[1]) and not np.allclose(col[0], col[3])
    rgb = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    assert mode_colours("RGB", rgb, torch.tensor([1, 2, 3, 4]), cls) is rgb
    assert mode_colours("Instance", rgb, None, cls) is rgb  # no ids: RGB
    assert mode_colours("Semantic", rgb, torch.tensor([1, 2, 3, 4]), None) is rgb
    with pytest.raises(ValueError):
        mode_colours("Depth", rgb, None, None)


def test_highlight_fades_only_the_others():
    col = np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32)
    c, o = highlight(col, np.array([0.8, 0.8], np.float32), np.array([True, False]))
    assert np.allclose(c[0], col[0]) and o[0] == pytest.approx(0.8)
    assert o[1] < 0.3 and c[1, 1] < 1.0 and c[1, 0] > 0.0  # fainter and greyer


# ----- the Viewer on a synthetic model (a fake viser server records what would be sent) -------
class _Handle:
    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.visible = True
        self.disabled = False

    def on_click(self, fn):
        return fn

    def on_update(self, fn):
        return fn

    def set_gaussians(self, centers, covariances, rgbs, opacities):
        assert centers.shape[0] == covariances.shape[0] == rgbs.shape[0] == opacities.shape[0]
        self.centers, self.rgbs, self.opacities = centers, rgbs, opacities


class _Api:
    def __getattr__(self, name):
        def add(*args, **kw):
            h = _Handle(args=args, **kw)
            if name == "add_dropdown":
                h.options, h.value = list(args[1]), kw.get("initial_value") or args[1][0]
            if name in ("add_text", "add_checkbox"):
                h.value = args[1]
            if name == "add_html":
                h.content = args[0]
            if name == "add_gaussian_splats":
                h.set_gaussians(*args[1:5])
            return h
        if name == "add_folder":
            import contextlib
            return lambda *a, **k: contextlib.nullcontext()
        if name == "on_click":
            return lambda **k: (lambda fn: fn)
        return add


class _Server:
    def __init__(self):
        self.scene, self.gui = _Api(), _Api()
        self.initial_camera = _Handle()


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from tests.test_objects import _cameras_json

    folder = tmp_path_factory.mktemp("viewer") / "model"
    _save(_model(list(OBJECTS) + [(0, 1, STUFF, (1.0, 1.0, -2.0))]), folder)
    _cameras_json(folder, [(1.5, -6.0, 2.0), (-5.0, 1.0, 1.5)], target=(1.0, 1.0, 0.3))
    return str(folder)


def _viewer(folder, **kw):
    from viewer.app import Viewer
    from viewer.data import load_viewer_data

    return Viewer(load_viewer_data(folder, **kw), _Server())


def test_viewer_picks_shows_the_list_row_isolates_hides_and_exports(synthetic_dir, tmp_path):
    from utils.ply import read_ply

    v = _viewer(synthetic_dir)
    d = v.data
    assert d.modes == ["RGB", "Instance", "Semantic"] and v.mode == "Instance"
    assert v.shown == d.num_gaussians == sum(o[2] for o in OBJECTS) + STUFF
    listed = {r.id: r for r in objects.model_table(objects.load_labels(synthetic_dir)).rows}
    assert [r.id for r in d.listed()] == list(listed)  # the list is `list`'s rows, same order
    # a ray from far along -y through the centre of object 3 (centre (3, 0, 0))
    assert v.pick_ray([3.0, -20.0, 0.0], [0.0, 1.0, 0.0]) == 3
    row = listed[3]
    assert "Object 3" in v.info_text and f"Gaussians: {row.gaussians:,}" in v.info_text
    assert ", ".join(f"{x:.3f}" for x in row.centroid) in v.info_text
    assert ", ".join(f"{x:.3f}" for x in row.extent) in v.info_text
    # highlight: object 3 keeps its opacity, the others are faded
    ids = d.ids.numpy()
    assert np.allclose(v.splats.opacities[ids == 3, 0], d.opacities[ids == 3])
    assert (v.splats.opacities[ids != 3, 0] < d.opacities[ids != 3] + 1e-6).all()
    # instance colours are the overlay colours
    assert np.allclose(v.splats.rgbs[ids == 3], colorize_ids(torch.tensor([3])).numpy() / 255.0)
    # isolate, then hide, then show all
    v.isolate()
    assert v.shown == int((ids == 3).sum())
    assert v.pick_ray([0.0, -20.0, 0.0], [0.0, 1.0, 0.0]) is None  # object 2 is not shown: nothing there
    v.show_all()
    assert v.pick_ray([0.0, -20.0, 0.0], [0.0, 1.0, 0.0]) == 2
    v.hide()
    assert v.picked is None and v.shown == d.num_gaussians - int((ids == 2).sum())
    assert v.pick_ray([0.0, -20.0, 0.0], [0.0, 1.0, 0.0]) != 2  # a hidden object cannot be picked
    v.show_all()
    # exports go through tools/objects.py extract / remove: the same rows, atomically
    v.select(2)
    path, n = v.export(folder=str(tmp_path))
    assert os.path.basename(path) == "object_2.ply" and n == listed[2].gaussians
    ref = tmp_path / "ref.ply"
    objects.extract(objects.load_labels(synthetic_dir), [2], str(ref))
    assert open(path, "rb").read() == ref.read_bytes()
    path, n = v.export(without=True, folder=str(tmp_path))
    assert n == d.num_gaussians - listed[2].gaussians and len(read_ply(path)["x"]) == n
    assert not [f for f in os.listdir(tmp_path) if "tmp" in f]
    # the search box filters by id and class name
    assert set(v.matches("")) == set(listed)
    assert v.matches("6 ·") == [6]
    # colour modes
    v.set_mode("Semantic")
    assert v.gui_mode.value == "Semantic"  # the dropdown follows
    v.select(None)
    assert np.allclose(v.splats.rgbs, semantic_colours(d.semantic))
    v.set_mode("RGB")
    assert np.allclose(v.splats.rgbs, d.rgb)
    with pytest.raises(ValueError):
        v.set_mode("Depth")


def test_frusta_and_jumping_to_a_training_view(synthetic_dir):
    import contextlib

    from scipy.spatial.transform import Rotation

    from tests.fixtures_scenes import look_at_c2w
    from viewer.data import camera_pose

    v = _viewer(synthetic_dir)
    assert len(v.frusta) == len(v.data.cameras) == 2
    assert [f.visible for f in v.frusta] == [False, True]  # the page starts at view 0; its own frustum is off
    pos, wxyz, fov, aspect = camera_pose(v.data.cameras[1])
    c2w = look_at_c2w((-5.0, 1.0, 1.5), (1.0, 1.0, 0.3))
    assert np.allclose(pos, c2w[:3, 3], atol=1e-6)
    R = Rotation.from_quat([wxyz[1], wxyz[2], wxyz[3], wxyz[0]]).as_matrix()
    assert np.allclose(R, c2w[:3, :3], atol=1e-6)  # OpenCV camera-to-world, as viser takes it
    assert fov == pytest.approx(2 * math.atan(24 / 60.0)) and aspect == pytest.approx(64 / 48)
    assert np.allclose(v.frusta[1].position, pos) and np.allclose(v.frusta[1].wxyz, wxyz)

    class Client:
        camera = _Handle()

        def atomic(self):
            return contextlib.nullcontext()

    client = Client()
    v.go_to_view(client, 1)
    cam = client.camera
    assert np.allclose(cam.position, pos) and cam.fov == pytest.approx(fov)
    fwd = (cam.look_at - cam.position) / np.linalg.norm(cam.look_at - cam.position)
    assert np.allclose(fwd, c2w[:3, 2], atol=1e-6) and np.allclose(cam.up_direction, -c2w[:3, 1])
    assert [f.visible for f in v.frusta] == [True, False]


def test_stuff_and_misses_pick_no_object(synthetic_dir):
    v = _viewer(synthetic_dir)
    assert v.pick_ray([1.0, -20.0, -2.0], [0.0, 1.0, 0.0]) == 0  # the stuff blob at (1, 1, -2)
    assert v.picked is None and "stuff" in v.info_text
    assert v.pick_ray([50.0, 50.0, 50.0], [1.0, 0.0, 0.0]) is None and "Nothing" in v.info_text


def test_large_models_are_subsampled_with_a_note(synthetic_dir):
    v = _viewer(synthetic_dir, max_splats=200)
    assert v.shown == 200 and len(v.data.display) == 200
    assert any("Showing 200 of 750" in n for n in v.data.notes)
    assert v.pick_ray([3.0, -20.0, 0.0], [0.0, 1.0, 0.0]) == 3  # picking still sees every Gaussian


def test_model_without_segmentation_opens_in_rgb_with_a_note(tmp_path):
    from tests.test_objects import _cameras_json

    model = _model(list(OBJECTS))
    del model.params["embedding"], model.params["semantic"]
    folder = _save(model, tmp_path / "plain", label_columns=False)
    _cameras_json(tmp_path / "plain", [(1.5, -6.0, 2.0)])
    v = _viewer(folder)
    assert v.data.modes == ["RGB"] and v.mode == "RGB"
    assert any("no segmentation" in n for n in v.data.notes)
    assert v.pick_ray([3.0, -20.0, 0.0], [0.0, 1.0, 0.0]) is None and "no object ids" in v.info_text


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, os.path.join(ROOT, "view.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_missing_model_and_port_in_use_are_one_line_errors(synthetic_dir, tmp_path, capsys):
    import view

    assert view.main(["-m", str(tmp_path / "nope"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model folder" in err
    with socket.socket() as s:  # a port in use: one line from the real CLI (no traceback)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _cli("-m", synthetic_dir, "--port", port)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"port {port}" in r.stderr and "in use" in r.stderr
