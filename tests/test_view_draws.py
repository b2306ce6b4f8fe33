"""--mask_view_share: where only some training views have masks, those are drawn at least that share of the
iterations (Fig. 9's sparse masks trained the 2D losses on 1000 of 10k iterations at 10 %: RESULTS.md 20b)."""
from collections import Counter

import pytest
import torch

import train
from scene import View, view_draws


def _views(n: int, masked: int, semantic_only: bool = False):
    return [View(camera=None, image=None, instance=None if semantic_only or i >= masked else torch.zeros(1),
                 semantic=torch.zeros(1) if semantic_only and i < masked else None) for i in range(n)]


@pytest.mark.parametrize("n,masked,share", [(140, 7, 0.5), (140, 14, 0.5), (140, 28, 0.5), (140, 14, 0.25),
                                            (10, 1, 0.9), (37, 5, 0.3)])
def test_views_with_masks_make_up_at_least_the_share_with_the_fewest_repeats(n, masked, share):
    draws = view_draws(_views(n, masked), share)
    counts = Counter(draws)
    assert sorted(counts) == list(range(n))  # every view, colour included, is drawn in each epoch
    assert all(counts[i] == 1 for i in range(masked, n))  # views without masks: once
    r = counts[0]
    assert all(counts[i] == r for i in range(masked))  # every view with masks the same number of times
    got = masked * r / len(draws)
    assert got >= share
    assert masked * (r - 1) / (n + masked * (r - 2)) < share  # one repeat fewer would fall short


def test_no_repeats_when_every_view_or_enough_views_have_masks_or_share_is_zero():
    assert view_draws(_views(20, 20), 0.5) == list(range(20))
    assert view_draws(_views(20, 10), 0.5) == list(range(20))  # already half
    assert view_draws(_views(20, 2), 0.0) == list(range(20))
    assert view_draws(_views(20, 0), 0.5) == list(range(20))  # no masks at all: colour only
    assert len(view_draws(_views(20, 2, semantic_only=True), 0.5)) == 20 + 2 * 8  # semantic masks count too


def _trainer(tiny_scene, tmp_path, *extra):
    args = train.prepare_args(["-s", tiny_scene, "-m", str(tmp_path / "t"), "--quiet", "--init_points", "500",
                               "--seed", "3", "--mask_fraction", "0.25", *extra])
    return train.Trainer(args, train.read_scene_for(args, allow_missing_masks=True))


def test_the_trainer_draws_views_with_masks_at_least_the_share_asked(tiny_scene, tmp_path):
    t = _trainer(tiny_scene, tmp_path, "--mask_view_share", "0.5")
    n = len(t.views)
    masked = {i for i, v in enumerate(t.views) if v.instance is not None}
    assert 0 < len(masked) < n / 2
    epoch = [t.next_view() for _ in range(len(t.draws))]
    ids = Counter(id(v) for v in epoch)
    assert len(ids) == n  # every view once at least: colour still trains on all of them
    with_masks = sum(v.instance is not None for v in epoch)
    assert with_masks / len(epoch) >= 0.5
    assert not t.stack  # one whole epoch, then a new shuffle

    flat = _trainer(tiny_scene, tmp_path / "flat")  # the default, as the paper: every view equally often
    epoch = [flat.next_view() for _ in range(n)]
    assert len({id(v) for v in epoch}) == n and sum(v.instance is not None for v in epoch) == len(masked)
