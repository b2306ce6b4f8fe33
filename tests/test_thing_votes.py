"""Each Gaussian's thing/stuff decision from the pixels it is part of (``segmentation.labels.label_votes``)."""
from __future__ import annotations

import types

import pytest
import torch

from segmentation.labels import DEFAULT_THING_RULE, ThingVotes, gaussian_label_columns, label_votes, pixel_codes
from segmentation.visibility import gaussian_visibility
from tests.test_rasterizer import TinyModel, as_camera, tiny_scene

THINGS = (1, 2)  # classes 1 and 2 are things, 0 and 3 stuff


def _scene():
    """One camera looking down +z: a wide opaque 'object' disc (0) in front, a wide 'wall' (1) behind it off
    to the side, a faint Gaussian (2) on the object's surface whose own feature says stuff, a faint one (3)
    on the wall whose own feature says thing, and one (4) hidden straight behind the object."""
    sc = tiny_scene(0, n=5, width=48, height=32)
    sc["means"] = torch.tensor([[-0.3, 0.0, 3.0], [1.2, 0.0, 6.0], [-0.3, 0.05, 2.99], [1.2, 0.1, 5.99],
                                [-0.3, 0.0, 5.0]], dtype=torch.float64)
    sc["scales"] = torch.tensor([[0.6, 0.6, 0.02], [1.5, 1.5, 0.02], [0.2, 0.2, 0.02], [0.3, 0.3, 0.02],
                                 [0.05, 0.05, 0.05]], dtype=torch.float64)
    sc["quats"] = torch.tensor([[1.0, 0, 0, 0]] * 5, dtype=torch.float64)
    sc["opacities"] = torch.tensor([0.99, 0.99, 0.05, 0.15, 0.9], dtype=torch.float64)
    sc["viewmat"] = torch.eye(4, dtype=torch.float64)
    model = TinyModel(sc)
    big = 8.0
    sem = torch.full((5, 4), -big, dtype=torch.float64)
    sem[0, 1] = big  # object: thing class 1
    sem[1, 0] = big  # wall: stuff class 0
    sem[2, 3], sem[2, 2] = big, big / 2  # faint, on the object, own argmax stuff (3); its best thing class is 2
    sem[3, 1] = big  # faint, on the wall, own argmax thing
    sem[4, 3] = big  # hidden, stuff
    emb = torch.tensor([[5.0, -5.0], [-5.0, -5.0], [-5.0, 5.0], [5.0, 5.0], [-5.0, -5.0]], dtype=torch.float64)
    model.params = {"embedding": emb, "semantic": sem}
    return model, as_camera(sc)


def _view(cam, instance=None):
    return types.SimpleNamespace(camera=cam, instance=instance, valid=None)


def test_votes_are_blending_weights_on_thing_pixels():
    model, cam = _scene()
    votes, tv = label_votes(model, [_view(cam), _view(cam)], thing_classes=THINGS, backend="torch")
    # seen: the blending weight over both views, exactly gaussian_visibility's
    torch.testing.assert_close(tv.seen, gaussian_visibility(model, [cam, cam], backend="torch"), rtol=1e-9, atol=1e-9)
    assert (tv.thing <= tv.seen + 1e-9).all() and (tv.thing >= 0).all()
    share = tv.thing / tv.seen.clamp_min(1e-12)
    # Gaussian tails overlap: each keeps a little weight on the other's pixels
    assert share[0] > 0.75 and share[2] > 0.75  # on the object's pixels
    assert share[1] < 0.25 and share[3] < 0.25  # on the wall's pixels
    assert tv.seen[0] > 50 and tv.seen[2] > 1 and tv.seen[4] < 0.5  # the hidden one: unseen (< 1 px)
    assert votes.views == 0  # no view had a mask: no segment votes


def test_masked_weight_is_the_weight_on_mask_segments_of_masked_views():
    """The third vote channel: the blending weight on pixels whose input mask names an object, over the
    views with a mask. A mask over the object's half of the image: the object's Gaussian puts most of its
    weight there, the wall's little; the flipped mask the reverse; a view without a mask adds nothing."""
    model, cam = _scene()
    h, w = cam.height, cam.width
    inst = torch.zeros(h, w, dtype=torch.int64)
    inst[:, : w // 2] = 4  # the object (x = -0.3) projects left of centre
    _, none = label_votes(model, [_view(cam)], thing_classes=THINGS, backend="torch")
    assert none.masked is None  # no view had a mask
    _, one = label_votes(model, [_view(cam, inst), _view(cam)], thing_classes=THINGS, backend="torch")
    _, both = label_votes(model, [_view(cam, inst), _view(cam, inst.flip(1))], thing_classes=THINGS, backend="torch")
    seen1 = one.seen / 2  # the weight of one view (both views see the same)
    assert (one.masked <= seen1 + 1e-9).all() and (one.masked >= 0).all()
    assert one.masked[0] > 0.55 * seen1[0] and one.masked[1] < 0.2 * seen1[1]  # 63 % and 11 % here
    torch.testing.assert_close(both.masked, both.seen / 2, rtol=1e-9, atol=1e-9)  # the halves add to one view
    # the share's reference is the weight in the masked views only: the view without a mask does not dilute it
    torch.testing.assert_close(one.masked_seen, seen1, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(one.mask_share(), one.masked / seen1, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(both.mask_share(), torch.full_like(both.seen, 0.5), rtol=1e-9, atol=1e-9)
    assert none.mask_share() is None


def test_rules_union_vote_own():
    own = torch.tensor([True, False, False, True, False, True])
    seen = torch.tensor([10.0, 10.0, 10.0, 10.0, 0.5, 0.5])
    thing = torch.tensor([9.0, 9.0, 2.0, 2.0, 0.5, 0.0])
    tv = ThingVotes(seen, thing)
    assert tv.decide(own, rule="own").tolist() == own.tolist()
    # vote: seen Gaussians (>= 1 px) by their share, unseen ones keep their own decision
    assert tv.decide(own, rule="vote").tolist() == [True, True, False, False, False, True]
    # union (default): own, or a seen Gaussian's vote
    assert tv.decide(own).tolist() == [True, True, False, True, False, True]
    assert tv.decide(own, share=0.1, rule="vote").tolist() == [True, True, True, True, False, True]
    with pytest.raises(ValueError, match="thing rule"):
        tv.decide(own, rule="majority")


def test_columns_promote_voted_things_with_their_best_thing_class():
    model, cam = _scene()
    _, tv = label_votes(model, [_view(cam)], thing_classes=THINGS, backend="torch")
    before = gaussian_label_columns(model, THINGS)
    after = gaussian_label_columns(model, THINGS, thing_votes=tv)
    assert before["semantic_label"].tolist() == [1, 0, 3, 1, 3]
    assert before["instance_label"].tolist() == [2, 0, 0, 4, 0]  # code + 1 where the own class is a thing
    # the faint Gaussian on the object becomes a thing, with its most likely thing class (2); the faint one on
    # the wall stays a thing (union), the hidden one stays stuff, nothing else changes
    assert after["semantic_label"].tolist() == [1, 0, 2, 1, 3]
    assert after["instance_label"].tolist() == [2, 0, 3, 4, 0]
    vote_only = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="vote")
    assert vote_only["instance_label"].tolist() == [2, 0, 3, 0, 0]  # the vote alone drops the faint wall one
    assert vote_only["semantic_label"].tolist() == [1, 0, 2, 0, 3]  # ... and gives it its best stuff class (0)
    assert torch.equal(vote_only["instance_label"] > 0, torch.isin(vote_only["semantic_label"], torch.tensor(THINGS)))
    # the two columns agree: instance > 0 exactly where the class is a thing (default rule)
    things = torch.isin(after["semantic_label"], torch.tensor(THINGS))
    assert torch.equal(after["instance_label"] > 0, things)


def test_code_votes_equal_count_code_votes():
    model, cam = _scene()
    h, w = cam.height, cam.width
    inst = torch.zeros(h, w, dtype=torch.int64)
    inst[:, : w // 2] = 3  # a mask segment over the object's side, another over the wall's
    inst[:, w // 2:] = 7
    views = [_view(cam, inst), _view(cam, None), _view(cam, inst.flip(1))]
    votes, _ = label_votes(model, views, thing_classes=THINGS, backend="torch")
    from gaussian_renderer import render

    from segmentation.postprocess import count_code_votes

    ref = count_code_votes(views, lambda v: pixel_codes(render(v.camera, model, features={"embedding": model.params[
        "embedding"]}, with_rgb=False, backend="torch").features["embedding"], "rendered"))
    assert votes.views == ref.views == 2 and votes.segments == ref.segments == 4
    assert torch.equal(votes.codes, ref.codes) and torch.equal(votes.wins, ref.wins)


def test_without_a_semantic_head_there_is_no_thing_vote():
    model, cam = _scene()
    del model.params["semantic"]
    votes, tv = label_votes(model, [_view(cam)], thing_classes=THINGS, backend="torch")
    assert tv is None
    cols = gaussian_label_columns(model, THINGS, thing_votes=tv)
    assert "semantic_label" not in cols and (cols["instance_label"] > 0).all()


def _bits(code: int, d: int = 3) -> list:
    return [5.0 if (code >> b) & 1 else -5.0 for b in range(d)]


def test_fill_and_rescue_give_object_gaussians_the_objects_id():
    """Eight seen object Gaussians (thing, code 5) around x = 0, eight seen wall Gaussians (stuff) around
    x = 10, four no view sees: u1 inside the object, own feature stuff -> the object's id and its best
    thing class; u2 inside the object, own thing with another code -> the object's id; u3 in the wall, own
    thing -> keeps its own code (its neighbours are stuff); u4 in the wall, own stuff -> stays stuff.
    Two seen Gaussians whose pixels and own feature both say stuff but whose code is the object's: r1 among
    the object's Gaussians and on the masks' object pixels -> rescued into the object (union_fill_rescue);
    r2 in the wall -> stays stuff."""
    g = torch.Generator().manual_seed(0)
    obj = torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.2
    wall = torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.2 + torch.tensor([10.0, 0, 0], dtype=torch.float64)
    rest = torch.tensor([[0.05, 0, 0], [-0.05, 0.02, 0], [10.05, 0, 0], [9.95, 0, 0.02], [0.02, -0.03, 0.01],
                         [10.02, 0.01, 0]], dtype=torch.float64)
    means = torch.cat([obj, wall, rest])
    codes = [5] * 8 + [2] * 8 + [1, 3, 6, 4, 5, 5]
    big = 8.0
    sem = torch.full((22, 4), -big, dtype=torch.float64)
    sem[:8, 1] = big  # object: thing class 1
    sem[8:16, 0] = big  # wall: stuff
    sem[16, 3], sem[16, 2] = big, big / 2  # u1: own stuff (3), best thing class 2
    sem[17, 1] = big  # u2: own thing
    sem[18, 2] = big  # u3: own thing
    sem[19, 0] = big  # u4: own stuff
    sem[20, 0], sem[20, 1] = big, big / 2  # r1: own stuff, best thing class 1
    sem[21, 0] = big  # r2: own stuff
    model = types.SimpleNamespace(params={"embedding": torch.tensor([_bits(c) for c in codes], dtype=torch.float64),
                                          "semantic": sem}, get_means=lambda: means,
                                  get_scales=lambda: torch.full((22, 3), 0.01, dtype=torch.float64),
                                  get_opacities=lambda: torch.full((22,), 0.8, dtype=torch.float64))
    seen = torch.tensor([20.0] * 16 + [0.0, 0.5, 0.0, 0.2, 20.0, 20.0], dtype=torch.float64)
    thing = torch.cat([torch.full((8,), 19.0), torch.full((8,), 1.0), torch.zeros(4), torch.full((2,), 1.0)])
    masked = seen * torch.tensor([0.9] * 8 + [0.0] * 8 + [0.0] * 4 + [0.5, 0.05], dtype=torch.float64)
    tv = ThingVotes(seen, thing.to(torch.float64), masked)  # r1 on object pixels of the masks, r2 not
    union = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union")
    filled = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill")
    default = gaussian_label_columns(model, THINGS, thing_votes=tv)
    rescued = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill_rescue")
    masks = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill_masks")
    assert DEFAULT_THING_RULE == "union_fill_masks" and torch.equal(default["instance_label"], masks["instance_label"])
    assert torch.equal(masks["instance_label"], rescued["instance_label"])  # nothing disputed in this scene
    # instance masks only (the fg/bg target derived from them): union_fill_masks leaves out the rescue
    bare = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill_masks", semantic_masks=False)
    assert torch.equal(bare["instance_label"], filled["instance_label"])
    forced = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill_rescue", semantic_masks=False)
    assert torch.equal(forced["instance_label"], rescued["instance_label"])  # the explicit rule still rescues
    assert union["instance_label"][16:].tolist() == [0, 4, 7, 0, 0, 0]  # the own feature alone decides unseen ones
    assert filled["instance_label"][16:].tolist() == [6, 6, 7, 0, 0, 0]
    assert rescued["instance_label"][16:].tolist() == [6, 6, 7, 0, 6, 0]  # r1 rescued, r2 (in the wall) not
    # r1 on background pixels of the masks: the mask gate keeps it stuff; without the masks' share no rescue
    masked_bg = masked.clone()
    masked_bg[20] = 0.02 * seen[20]
    gated = gaussian_label_columns(model, THINGS, thing_votes=ThingVotes(seen, thing.to(torch.float64), masked_bg),
                                   thing_rule="union_fill_rescue")
    assert gated["instance_label"][16:].tolist() == [6, 6, 7, 0, 0, 0]
    no_masks = gaussian_label_columns(model, THINGS, thing_votes=ThingVotes(seen, thing.to(torch.float64)),
                                      thing_rule="union_fill_rescue")
    assert torch.equal(no_masks["instance_label"], filled["instance_label"])
    for cols in (filled, rescued):
        assert torch.equal(cols["instance_label"][:16], union["instance_label"][:16])  # seen ones unchanged
    assert rescued["instance_label"][:8].tolist() == [6] * 8 and (rescued["instance_label"][8:16] == 0).all()
    assert rescued["semantic_label"][16:].tolist() == [2, 1, 2, 0, 1, 0]  # promoted with their best thing class
    things = torch.isin(rescued["semantic_label"], torch.tensor(THINGS))
    assert torch.equal(rescued["instance_label"] > 0, things)


def test_masks_settle_gaussians_only_their_own_feature_calls_things():
    """union_fill_masks: seen Gaussians whose own feature says thing while their pixels render as stuff (the
    vote) stay things only where the input masks put at least DEFAULT_DISPUTE_MASK_SHARE of their weight on
    object pixels. d1 on the object, backed by the masks -> keeps its id; d2 on the floor, a thing by its
    own feature (the object's code smoothed onto it), masks say background -> stuff; d3 the same as d2 but
    unseen -> the fill decides, the masks cannot. Undisputed Gaussians are untouched, and union_fill keeps
    both disputed ones."""
    from segmentation.labels import DEFAULT_DISPUTE_MASK_SHARE

    g = torch.Generator().manual_seed(1)
    obj = torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.2
    floor = torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.2 + torch.tensor([10.0, 0, 0], dtype=torch.float64)
    rest = torch.tensor([[0.03, 0.01, 0], [10.02, 0, 0.01], [10.0, 0.02, 0]], dtype=torch.float64)
    means = torch.cat([obj, floor, rest])
    codes = [5] * 8 + [2] * 8 + [5, 5, 5]
    big = 8.0
    sem = torch.full((19, 4), -big, dtype=torch.float64)
    sem[:8, 1] = big  # object: thing
    sem[8:16, 0] = big  # floor: stuff
    sem[16:19, 1] = big  # d1, d2, d3: things by their own feature
    model = types.SimpleNamespace(params={"embedding": torch.tensor([_bits(c) for c in codes], dtype=torch.float64),
                                          "semantic": sem}, get_means=lambda: means,
                                  get_scales=lambda: torch.full((19, 3), 0.01, dtype=torch.float64),
                                  get_opacities=lambda: torch.full((19,), 0.8, dtype=torch.float64))
    seen = torch.tensor([20.0] * 18 + [0.0], dtype=torch.float64)
    thing = torch.cat([torch.full((8,), 19.0), torch.full((8,), 1.0), torch.full((3,), 2.0)])  # d1-d3 render stuff
    share = torch.tensor([0.9] * 8 + [0.0] * 8 + [0.6, 0.05, 0.0], dtype=torch.float64)
    assert share[17] < DEFAULT_DISPUTE_MASK_SHARE <= share[16]
    tv = ThingVotes(seen, thing, seen * share)
    assert tv.disputed(sem[:, 1] > 0).tolist() == [False] * 16 + [True, True, False]
    masks = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill_masks")["instance_label"]
    fill = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill")["instance_label"]
    assert fill[16:].tolist() == [6, 6, 6]
    assert masks[16:].tolist() == [6, 0, 6]
    assert torch.equal(masks[:16], fill[:16])
    # the demoted one gets its most likely stuff class, so the PLY's two columns agree
    sem[17, 3] = big / 2  # d2's logits: thing 1 first, then stuff 3, then stuff 0
    cols = gaussian_label_columns(model, THINGS, thing_votes=tv, thing_rule="union_fill_masks")
    assert cols["semantic_label"][16:].tolist() == [1, 3, 1]
    assert torch.equal(cols["instance_label"] > 0, torch.isin(cols["semantic_label"], torch.tensor(THINGS)))
    # without the masks' share there is nothing to settle the dispute on: the rule is union_fill
    bare = gaussian_label_columns(model, THINGS, thing_votes=ThingVotes(seen, thing), thing_rule="union_fill_masks")
    assert torch.equal(bare["instance_label"], fill)


def _sem_view(cam, semantic, confidence=None):
    return types.SimpleNamespace(camera=cam, instance=None, valid=None, semantic=semantic, confidence=confidence)


def test_semantic_votes_lift_each_gaussians_classes_from_the_masks():
    """--semantic_head vote: the object's half of the image labelled class 1, the wall's class 0. Each seen
    Gaussian's shares are its blending weight per class over its total: the object's Gaussians (0, 2) mostly 1,
    the wall's (1, 3) mostly 0; pixels labelled -1 add nothing; the hidden Gaussian (4) takes its seen
    neighbours' majority class, one-hot. Rows sum to one."""
    from segmentation.labels import semantic_votes
    from segmentation.visibility import fill_unseen

    model, cam = _scene()
    h, w = cam.height, cam.width
    sem = torch.zeros(h, w, dtype=torch.int64)
    sem[:, : w // 2] = 1
    shares = semantic_votes(model, [_sem_view(cam, sem)], 4, backend="torch")
    assert shares.shape == (5, 4)
    torch.testing.assert_close(shares.sum(1), torch.ones(5, dtype=shares.dtype))
    # the wide object disc spills past the image's middle: 63 % of its weight on class 1 (as in the test above)
    assert shares[0, 1] > 0.55 and shares[2, 1] > 0.75 and shares[0].argmax() == 1
    assert shares[1, 0] > 0.8 and shares[3, 0] > 0.99
    assert shares[:, 2:].abs().max() < 1e-12  # no pixel of classes 2 and 3
    seen = gaussian_visibility(model, [cam], backend="torch")
    expect4 = fill_unseen(shares.argmax(1), model.get_means(), seen)[4]
    assert shares[4].max() == 1.0 and shares[4].argmax() == expect4
    # the wall's half unlabelled: the wall's Gaussian keeps only its tail on the object's pixels, all class 1
    ign = sem.clone()
    ign[:, w // 2:] = -1
    only = semantic_votes(model, [_sem_view(cam, ign)], 4, backend="torch")
    assert only[1, 1] > 0.99 and only[0, 1] > 0.99
    # a confidence of 0 on the object's half leaves class 0 alone for everyone seen
    conf = torch.ones(h, w, dtype=torch.float64)
    conf[:, : w // 2] = 0.0
    flat = semantic_votes(model, [_sem_view(cam, sem, conf)], 4, backend="torch")
    assert (flat[:4, 0] > 0.99).all()
    # two views add their weights: the same view twice gives the same shares
    torch.testing.assert_close(semantic_votes(model, [_sem_view(cam, sem)] * 2, 4, backend="torch"), shares)
