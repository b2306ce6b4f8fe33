"""The default decoding rule (segment votes): every real code kept and every stray code dropped, from
5 to 500 objects, with no size knob; the former rule (a fraction of the Gaussians) for contrast."""
from types import SimpleNamespace

import pytest
import torch

from segmentation.postprocess import (CodeVotes, DEFAULT_SNAP_FRACTION, count_code_votes, model_valid_codes,
                                      segment_winners, snap_to_valid)

D = 12  # bits: 4096 codes


def synthetic_views(n_objects: int, n_views: int = 24, size: int = 192, cell: int = 16, seed: int = 0):
    """Rendered-code images and input masks of a scene of ``n_objects`` square objects.

    Each view shows a subset of the objects, one per grid cell, each a square of 4..16 px (so the
    smallest covers 16 px and neighbours touch). Like a trained model's renders: an object's pixels
    decode to its code, except (a) a 1-px band on its right edge, where the embedding blends with
    the neighbour and decodes to a stray code (a fresh one per object and view), and
    (b) 3 % salt pixels with random stray codes. Like a segmenter's masks: one segment per visible
    object (its whole square, band included), ids permuted per view.
    Returns (views, real codes [n_objects], stray codes used).
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(2 ** D, generator=g)
    real = perm[:n_objects]
    stray_pool = perm[n_objects:]
    per_row = size // cell
    cells = per_row * per_row
    order = torch.cat([torch.randperm(n_objects, generator=g) for _ in range(n_views * cells // n_objects + 1)])
    views, strays, pos = [], set(), 0
    for _ in range(n_views):
        codes = torch.zeros(size, size, dtype=torch.int64)
        mask = torch.zeros(size, size, dtype=torch.int64)
        ids = torch.randperm(cells, generator=g) + 1  # per-view permuted mask ids
        shown = order[pos:pos + min(cells, n_objects)]
        pos += shown.numel()
        sides = torch.randint(4, cell + 1, (shown.numel(),), generator=g)
        for k, (obj, s) in enumerate(zip(shown.tolist(), sides.tolist())):
            y, x = (k // per_row) * cell, (k % per_row) * cell
            codes[y:y + s, x:x + s] = real[obj]
            mask[y:y + s, x:x + s] = ids[k]
            band = stray_pool[torch.randint(len(stray_pool), (1,), generator=g)]
            codes[y:y + s, x + s - 1] = band  # blended boundary with the right-hand neighbour
            strays.add(int(band))
        salt = torch.rand(size, size, generator=g) < 0.03
        salt_codes = stray_pool[torch.randint(len(stray_pool), (int(salt.sum()),), generator=g)]
        codes[salt] = salt_codes
        strays |= set(salt_codes.tolist())
        views.append(SimpleNamespace(instance=mask, valid=None, codes=codes))
    seen = torch.unique(real[order[:pos]])
    return views, seen, strays - set(real.tolist())


@pytest.mark.parametrize("n_objects", [5, 50, 500])
def test_segment_votes_keep_every_real_code_and_no_stray_one(n_objects):
    views, real, strays = synthetic_views(n_objects)
    assert len(strays) > 100  # plenty of stray codes to drop
    votes = count_code_votes(views, lambda v: v.codes)
    valid = votes.valid()
    assert set(valid.tolist()) == set(real.tolist())  # all real codes, nothing else
    assert votes.views == len(views) and votes.segments == int(votes.wins.sum())
    # pixels then snap onto real codes only
    snapped = snap_to_valid(views[0].codes, valid)
    assert set(torch.unique(snapped).tolist()) <= set(real.tolist())


def test_former_rule_drops_small_objects_at_500_but_not_at_5():
    """A fraction of all Gaussians as the threshold: fine at 5 objects, loses objects at 500 (issue 9)."""
    lost = {}
    for n in (5, 500):
        g = torch.Generator().manual_seed(n)
        real = torch.randperm(2 ** D, generator=g)[:n]
        area = torch.randint(9, 257, (n,), generator=g)  # pixels of each object, as in synthetic_views
        counts = area * 4  # Gaussians per object ~ its area
        codes = torch.repeat_interleave(real, counts)  # [N]
        bits = (codes[:, None] >> torch.arange(D)) & 1
        model = SimpleNamespace(params={"embedding": bits.float() * 8 - 4}, num_gaussians=codes.numel(),
                                get_opacities=lambda c=codes: torch.ones(c.numel()))
        valid = model_valid_codes(model, None, DEFAULT_SNAP_FRACTION)
        lost[n] = n - int(torch.isin(real, valid).sum())
    assert lost[5] == 0
    assert lost[500] > 50


def test_segment_winners_rules():
    codes = torch.tensor([[1, 1, 2, 2, 7],
                          [1, 3, 2, 2, 7],
                          [5, 5, 6, 6, 7]])
    segs = torch.tensor([[1, 1, 2, 2, 0],
                         [1, 1, 2, 2, 0],
                         [9, 9, 9, 9, -1]])
    assert segment_winners(codes, segs, min_pixels=1).tolist() == [1, 2, 5]  # seg 9: tie 5/6 -> smaller
    assert segment_winners(codes, segs, min_pixels=5).tolist() == []  # every segment has 4 pixels
    assert segment_winners(codes, segs, min_pixels=4, min_share=0.7).tolist() == [1, 2]  # 5 holds 1/2
    assert segment_winners(codes, torch.zeros_like(segs)).numel() == 0  # 7 (id 0 / -1) never votes
    with pytest.raises(ValueError):
        segment_winners(codes, segs[:2])


def test_votes_skip_views_without_masks_and_invalid_pixels_and_round_trip(tmp_path):
    from segmentation.labels import load_code_votes, save_code_votes

    codes = torch.tensor([[3, 3, 4, 4]] * 4)
    inst = torch.tensor([[1, 1, 2, 2]] * 4)
    valid = torch.tensor([[True, True, False, False]] * 4)  # segment 2 lies outside the valid region
    views = [SimpleNamespace(instance=inst, valid=valid), SimpleNamespace(instance=None, valid=None)]
    votes = count_code_votes(views, lambda v: codes)
    assert votes.codes.tolist() == [3] and votes.wins.tolist() == [1] and votes.views == 1
    votes2 = count_code_votes([SimpleNamespace(instance=inst, valid=None)] * 3, lambda v: codes)
    assert votes2.wins.tolist() == [3, 3]
    assert votes2.valid(3).tolist() == [3, 4] and votes2.valid(4).tolist() == []
    save_code_votes(votes2, str(tmp_path))
    back = load_code_votes(str(tmp_path))
    assert torch.equal(back.codes, votes2.codes) and torch.equal(back.wins, votes2.wins)
    assert back.segments == 6 and back.views == 3
    assert CodeVotes(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 0, 0).valid() is None
    assert load_code_votes(str(tmp_path / "missing")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_segment_votes_same_on_cuda():
    views, real, _ = synthetic_views(500)
    cpu = count_code_votes(views, lambda v: v.codes)
    gpu = count_code_votes(views, lambda v: v.codes.cuda())  # masks stay on the host, as in training
    assert torch.equal(cpu.codes, gpu.codes) and torch.equal(cpu.wins, gpu.wins)
    assert set(gpu.valid().tolist()) == set(real.tolist())
