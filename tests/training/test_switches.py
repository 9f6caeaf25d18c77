"""Training switches: per-tensor clipping, the weight-decay cosine, the LARS trust coefficient, the predictor's
learning-rate scale, the view switches (flip, blur and solarisation probabilities) and `--mixed_precision auto`."""

import json
import math

import pytest
import torch
from conftest import (
    reset_accelerate,
    tiny_byol_config,
    tiny_dino_config,
    tiny_mae_config,
    tiny_msbreg_config,
    tiny_training_args,
)
from torch import nn

from ssl_hf import BYOLForPreTraining, get_method
from ssl_hf.data.color import MultiCrop, MultiView, apply_color
from ssl_hf.data.pipeline import sample_rngs
from ssl_hf.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MaskedView,
    build_views,
    normalize,
    random_resized_box,
    resized_crops,
)
from ssl_hf.training import TrainingArguments, pretrain
from ssl_hf.training import loop as loop_module
from ssl_hf.training import precision as precision_module
from ssl_hf.training.arguments import per_view_probabilities
from ssl_hf.training.optim import build_optimizer, clip_grad_norm_per_tensor_
from ssl_hf.training.precision import choose_precision


def _args(tmp_path, name="run", **overrides):
    return tiny_training_args(tmp_path / name, **{"max_steps": 2, "save_steps": 2, "warmup_steps": 1, **overrides})


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def _capture_optimizer(monkeypatch):
    """Records the optimiser the loop builds, and its groups' weight decay at every `step()`."""
    real, captured = loop_module.build_optimizer, {"decays": []}

    def capturing(*args, **kwargs):
        optimizer = real(*args, **kwargs)
        captured["optimizer"] = optimizer
        optimizer.register_step_pre_hook(
            lambda opt, *_: captured["decays"].append([g["weight_decay"] for g in opt.param_groups])
        )
        return optimizer

    monkeypatch.setattr(loop_module, "build_optimizer", capturing)
    return captured


# ------------------------------------------------------------------------------------------ per-tensor clip


def _dino_clip_gradients(parameters, clip):
    """DINO's `utils.clip_gradients`, verbatim apart from the return value."""
    for p in parameters:
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)


def _params_with_grads(scales):
    generator = torch.Generator().manual_seed(0)
    params = []
    for k, scale in enumerate(scales):
        p = nn.Parameter(torch.zeros(3 + k, 4))
        if scale is not None:
            g = torch.randn(3 + k, 4, generator=generator)
            p.grad = g / g.norm() * scale  # gradient norm exactly `scale` (up to rounding)
        params.append(p)
    return params


def test_per_tensor_clipping_matches_dino():
    scales = [0.01, 2.5, 2.9999, 3.5, 40.0, None, 1e4]  # below, at and above max_norm 3, and no gradient
    ours, reference = _params_with_grads(scales), _params_with_grads(scales)
    before = [p.grad.clone() if p.grad is not None else None for p in ours]
    clip_grad_norm_per_tensor_(ours, 3.0)
    _dino_clip_gradients(reference, 3.0)
    for p, q, g, scale in zip(ours, reference, before, scales):
        if scale is None:
            assert p.grad is None
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
        if scale < 3.0:
            assert torch.equal(p.grad, g)  # small gradients untouched, whatever the other tensors' norms
        else:
            assert p.grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    clip_grad_norm_per_tensor_([nn.Parameter(torch.zeros(2))], 1.0)  # no gradient at all: no error


@pytest.mark.parametrize("per_tensor", [True, False])
def test_clip_per_tensor_reaches_the_loop(tmp_path, monkeypatch, per_tensor):
    calls = []

    def recording(parameters, max_norm):
        parameters = list(parameters)
        clip_grad_norm_per_tensor_(parameters, max_norm)
        calls.append(max(p.grad.norm().item() for p in parameters if p.grad is not None))

    monkeypatch.setattr(loop_module, "clip_grad_norm_per_tensor_", recording)
    args = _args(tmp_path, max_grad_norm=1e-3, clip_per_tensor=per_tensor)
    pretrain(get_method("mae"), tiny_mae_config(), args)
    if per_tensor:
        assert len(calls) == 2  # once per optimiser step
        assert max(calls) <= 1e-3 * (1 + 1e-4)  # every tensor's gradient was clipped to the max norm
    else:
        assert calls == []  # the default is the global norm


# ------------------------------------------------------------------------------------ weight-decay cosine


def test_weight_decay_follows_a_cosine_to_weight_decay_end(tmp_path, monkeypatch):
    captured = _capture_optimizer(monkeypatch)
    args = _args(tmp_path, max_steps=6, save_steps=3, weight_decay=0.04, weight_decay_end=0.4)
    pretrain(get_method("mae"), tiny_mae_config(), args)

    def expected(step):  # DINO: from weight_decay at step 0 to weight_decay_end at max_steps, no warm-up
        return 0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * step / 6))

    decays = captured["decays"]
    assert len(decays) == 6
    for step, (decayed, not_decayed) in enumerate(decays):  # the value in use at optimiser step `step + 1`
        assert decayed == pytest.approx(expected(step), rel=1e-12)
        assert not_decayed == 0.0
    assert decays[0][0] == pytest.approx(0.04)
    # the checkpoint holds the value for the next step (restored on resume)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_3" / "optimizer.bin", weights_only=False)
    assert state["param_groups"][0]["weight_decay"] == pytest.approx(expected(3))  # half-way: 0.22
    assert state["param_groups"][1]["weight_decay"] == 0.0


def test_weight_decay_is_constant_without_weight_decay_end(tmp_path, monkeypatch):
    captured = _capture_optimizer(monkeypatch)
    pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, max_steps=3, weight_decay=0.04))
    assert captured["decays"] == [[0.04, 0.0]] * 3


# ------------------------------------------------------------------------------------- LARS trust coefficient


def _lars_args(**overrides):
    return TrainingArguments(**overrides).resolved(get_method("byol").training_defaults)


@pytest.mark.parametrize("eta", [1e-3, 0.02])
def test_lars_trust_coefficient_reaches_the_optimizer(eta):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = build_optimizer("lars", model, 0.5, _lars_args(lars_trust_coefficient=eta), torch.device("cpu"))
    assert [g["trust_coefficient"] for g in optimizer.param_groups] == [eta, eta]
    before = [p.detach().clone() for p in (model[0].weight, model[2].weight)]
    model(torch.randn(32, 8)).pow(2).mean().backward()
    optimizer.step()
    for w0, w in zip(before, (model[0].weight, model[2].weight)):  # first step of an adapted tensor: lr * eta * |w|
        assert (w.detach() - w0).norm().item() == pytest.approx(0.5 * eta * w0.norm().item(), rel=1e-4)


def test_lars_trust_coefficient_default_validation_and_loop(tmp_path, monkeypatch):
    assert _lars_args().lars_trust_coefficient == 1e-3  # BYOL's
    with pytest.raises(ValueError, match="lars_trust_coefficient must be > 0"):
        _lars_args(lars_trust_coefficient=0.0).validate()
    captured = _capture_optimizer(monkeypatch)
    pretrain(get_method("byol"), tiny_byol_config(), _args(tmp_path, max_steps=1, lars_trust_coefficient=0.05))
    assert [g["trust_coefficient"] for g in captured["optimizer"].param_groups] == [0.05, 0.05]


# ------------------------------------------------------------------------------------------- view switches


def _images(n, seed=0):
    generator = torch.Generator().manual_seed(seed)  # random pixels: no image equals its mirror
    return [torch.randint(0, 256, (3, 40, 48), generator=generator, dtype=torch.uint8) for _ in range(n)]


def test_mae_view_without_flip_is_the_unflipped_crop_with_the_same_draws():
    images, n = _images(8), 8
    views = {flip: build_views("mae", tiny_mae_config(), hflip=flip) for flip in (False, True)}
    assert isinstance(views[False], MaskedView)
    out = {flip: views[flip](images, sample_rngs(0, 0, range(n))) for flip in (False, True)}
    # the draws, in MaskedView's order: boxes, flips (drawn also when off), masking noise
    rngs = sample_rngs(0, 0, range(n))
    view = views[True]
    boxes = [random_resized_box(rng, 40, 48, view.scale, view.ratio) for rng in rngs]
    flips = [bool(rng.random() < 0.5) for rng in rngs]
    assert 0 < sum(flips) < n
    unflipped = normalize(resized_crops(images, boxes, [False] * n, 32), view.mean, view.std)
    assert torch.equal(out[False]["pixel_values"], unflipped)
    assert torch.equal(
        out[True]["pixel_values"], normalize(resized_crops(images, boxes, flips, 32), view.mean, view.std)
    )
    assert torch.equal(out[False]["noise"], out[True]["noise"])  # same random numbers, so the same masks
    for k, flipped in enumerate(flips):
        same = torch.equal(out[False]["pixel_values"][k], out[True]["pixel_values"][k])
        assert same != flipped


def test_byol_views_without_flip_draw_the_same_boxes_and_colours():
    images, n = _images(6), 6
    views = {flip: build_views("byol", tiny_byol_config(), hflip=flip) for flip in (False, True)}
    assert isinstance(views[False], MultiView)
    drawn = {flip: views[flip].draw(images, sample_rngs(0, 0, range(n))) for flip in (False, True)}
    (boxes_off, flips_off, params_off), (boxes_on, flips_on, params_on) = drawn[False], drawn[True]
    assert boxes_off == boxes_on
    assert not any(flips_off)
    assert any(flips_on)
    for name in ("jitter", "order", "factors", "grayscale", "blur", "sigma", "solarize"):
        assert torch.equal(getattr(params_off, name), getattr(params_on, name))
    out = views[False](images, sample_rngs(0, 0, range(n)))["pixel_values"]
    crops = resized_crops([im for im in images for _ in range(2)], boxes_on, [False] * (2 * n), 32)
    expected = normalize(apply_color(crops, params_on), views[False].mean, views[False].std)
    assert torch.equal(out, expected.view(n, 2, 3, 32, 32))


def test_multicrop_without_flip_draws_the_same_boxes():
    images, n = _images(6), 6
    crops = {flip: build_views("multicrop", tiny_dino_config(), hflip=flip) for flip in (False, True)}
    assert isinstance(crops[False], MultiCrop)
    drawn = {}
    for flip, view in crops.items():
        rngs = sample_rngs(0, 0, range(n))
        drawn[flip] = (view.globals.draw(images, rngs), view.locals.draw(images, rngs))  # __call__'s order
    for part in (0, 1):
        (boxes_off, flips_off, _), (boxes_on, flips_on, _) = drawn[False][part], drawn[True][part]
        assert boxes_off == boxes_on
        assert not any(flips_off)
        assert any(flips_on)


def _draw_params(view, n=40):
    images = _images(1) * n
    if isinstance(view, MultiCrop):
        rngs = sample_rngs(0, 0, range(n))
        return view.globals.draw(images, rngs)[2], view.locals.draw(images, rngs)[2]
    return (view.draw(images, sample_rngs(0, 0, range(n)))[2],)


@pytest.mark.parametrize(("preset", "config"), [("byol", tiny_byol_config), ("multicrop", tiny_dino_config)])
def test_zero_blur_and_solarize_probabilities_switch_them_off(preset, config):
    default = _draw_params(build_views(preset, config()))
    assert any(p.blur.any() for p in default)  # the method's defaults do blur and solarise
    assert any(p.solarize.any() for p in default)
    off = _draw_params(build_views(preset, config(), blur_prob=(0.0,), solarize_prob=(0.0,)))
    assert not any(p.blur.any() for p in off)
    assert not any(p.solarize.any() for p in off)


def test_multicrop_probabilities_cycle_over_global1_global2_local():
    crops = build_views("multicrop", tiny_dino_config(), blur_prob=(1.0, 0.0), solarize_prob=(0.0, 1.0))
    globals_, locals_ = _draw_params(crops, n=20)
    assert globals_.blur.view(20, 2).tolist() == [[True, False]] * 20  # (1.0, 0.0) -> 1.0, 0.0, then 1.0
    assert globals_.solarize.view(20, 2).tolist() == [[False, True]] * 20
    assert locals_.blur.all()
    assert not locals_.solarize.any()
    three = build_views("multicrop", tiny_dino_config(), blur_prob=(0.0, 0.0, 1.0), solarize_prob=(1.0,))
    globals_, locals_ = _draw_params(three, n=20)
    assert not globals_.blur.any()
    assert locals_.blur.all()
    assert globals_.solarize.all()
    assert locals_.solarize.all()


def test_byol_probabilities_per_view():
    views = build_views("byol", tiny_byol_config(), blur_prob=(0.0, 1.0), solarize_prob=(1.0, 0.0))
    (params,) = _draw_params(views, n=20)
    assert params.blur.view(20, 2).tolist() == [[False, True]] * 20
    assert params.solarize.view(20, 2).tolist() == [[True, False]] * 20


@pytest.mark.parametrize("switch", ["blur_prob", "solarize_prob"])
def test_mae_view_rejects_colour_probabilities(switch):
    with pytest.raises(ValueError, match="MAE-style methods use crop"):
        build_views("mae", tiny_mae_config(), **{switch: (0.5,)})


def test_training_arguments_reach_the_views(tmp_path):
    from accelerate import Accelerator

    args = _args(tmp_path, hflip=False, blur_prob="0", solarize_prob="0.0,1")
    _, dataset = loop_module._build_loader(get_method("byol"), tiny_byol_config(), args, Accelerator(cpu=True))
    views = dataset.view_fn
    assert views.hflip is False
    assert [(a.blur_prob, a.solarize_prob) for a in views.augments] == [(0.0, 0.0), (0.0, 1.0)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.0,0.1", (1.0, 0.1)), (" 0.5 ", (0.5,)), (0.5, (0.5,)), ([1, 0.1], (1.0, 0.1)), ((0, 1), (0.0, 1.0))],
)
def test_per_view_probabilities_parses(value, expected):
    assert per_view_probabilities(value, "blur_prob") == expected


def test_per_view_probabilities_none_and_errors():
    assert per_view_probabilities(None, "blur_prob") is None
    with pytest.raises(ValueError, match=r"blur_prob='a' must be comma-separated probabilities"):
        per_view_probabilities("a", "blur_prob")
    with pytest.raises(ValueError, match=r"solarize_prob='1.5' must hold probabilities in \[0, 1\]"):
        per_view_probabilities("1.5", "solarize_prob")
    with pytest.raises(ValueError, match=r"blur_prob='0.2,-1'"):
        per_view_probabilities("0.2,-1", "blur_prob")
    with pytest.raises(ValueError, match="solarize_prob"):  # checked with the other arguments, before any work
        TrainingArguments(solarize_prob="0.1,x").resolved({}).validate()


# ------------------------------------------------------------------------------------ --mixed_precision auto


def test_choose_precision_times_fp32_and_bf16_and_restores_the_rng(tmp_path):
    spec = get_method("mae")
    args = _args(tmp_path, mixed_precision="auto").resolved(spec.training_defaults)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    choice, timings = choose_precision(spec, tiny_mae_config(), args, steps=2, max_images=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert choice in ("no", "bf16")
    assert timings["choice"] == choice
    assert timings["fp32_step_seconds"] > 0
    assert timings["bf16_step_seconds"] > 0
    assert timings["timed_images"] == min(3, args.batch_size)  # a small batch: only the ratio is compared


def test_choose_precision_keeps_the_resumed_choice_without_timing(tmp_path, monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("a resumed run must not time again")

    monkeypatch.setattr(precision_module, "_step_seconds", no_timing)
    args = _args(tmp_path, mixed_precision="auto").resolved({})
    choice, timings = choose_precision(get_method("mae"), tiny_mae_config(), args, resumed="bf16")
    assert choice == "bf16"
    assert "fp32_step_seconds" not in timings


def test_auto_precision_run_records_its_choice_and_equals_the_explicit_run(tmp_path):
    spec, config = get_method("mae"), tiny_mae_config()
    pretrain(spec, config, _args(tmp_path, "auto", mixed_precision="auto"))
    record = json.loads((tmp_path / "auto" / "args.json").read_text())
    auto = record["derived"]["mixed_precision_auto"]
    assert auto["choice"] in ("no", "bf16")
    assert auto["fp32_step_seconds"] > 0
    assert record["training"]["mixed_precision"] == auto["choice"]
    meta = json.loads((tmp_path / "auto" / "checkpoints" / "step_2" / "ssl_hf_state.json").read_text())
    assert meta["mixed_precision"] == auto["choice"]
    resume = _args(tmp_path, "auto", mixed_precision="auto", resume_from_checkpoint="latest")
    assert loop_module._resume_precision(tmp_path / "auto", resume) == auto["choice"]
    reset_accelerate()
    pretrain(spec, config, _args(tmp_path, "explicit", mixed_precision=auto["choice"]))
    assert _losses(tmp_path / "auto") == _losses(tmp_path / "explicit")
    explicit = json.loads((tmp_path / "explicit" / "args.json").read_text())
    assert "mixed_precision_auto" not in explicit["derived"]


def test_channel_permutation_reorders_channels_and_keeps_other_draws():
    """With channel_permute_prob 1 each view is its unpermuted self with RGB reordered; boxes and colours unchanged."""
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(8)]
    plain = build_views("byol", tiny_byol_config(), hflip=False)
    permuted = build_views("byol", tiny_byol_config(), hflip=False, channel_permute_prob=1.0)
    boxes, _, params = plain.draw(images, sample_rngs(0, 0, range(8)))
    boxes_p, _, params_p = permuted.draw(images, sample_rngs(0, 0, range(8)))
    assert boxes == boxes_p
    assert torch.equal(params.factors, params_p.factors)
    assert torch.equal(params.channels, torch.arange(3).repeat(16, 1))
    orders = {tuple(c.tolist()) for c in params_p.channels}
    assert len(orders) > 1
    assert all(sorted(o) == [0, 1, 2] for o in orders)
    a = plain(images, sample_rngs(0, 0, range(8)))["pixel_values"].flatten(0, 1)
    b = permuted(images, sample_rngs(0, 0, range(8)))["pixel_values"].flatten(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    a, b = a * std + mean, b * std + mean  # undo the per-channel normalisation before comparing channels
    expected = a.gather(1, params_p.channels[:, :, None, None].expand_as(a))
    torch.testing.assert_close(b, expected, atol=1e-5, rtol=0)


def test_channel_permutation_is_rejected_for_masked_views():
    with pytest.raises(ValueError, match="channel_permute_prob"):
        build_views("mae", tiny_mae_config(), channel_permute_prob=0.5)


# ------------------------------------------------------------------------------ predictor learning-rate scale


def test_the_predictor_lr_scale_splits_only_the_predictor_and_keeps_decay_and_adaptation():
    default = build_optimizer("lars", BYOLForPreTraining(tiny_byol_config()), 0.2, _lars_args(), torch.device("cpu"))
    assert [(g["decay"], g["lr_scale"]) for g in default.param_groups] == [(True, 1.0), (False, 1.0)]  # as before

    model = BYOLForPreTraining(tiny_byol_config(pred_lr_scale=10.0))
    optimizer = build_optimizer("lars", model, 0.2, _lars_args(weight_decay=1e-4), torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = [{names[id(p)] for p in g["params"]} for g in optimizer.param_groups]
    assert [(g["decay"], g["lr_scale"]) for g in optimizer.param_groups] == [
        (True, 1.0),
        (False, 1.0),
        (True, 10.0),
        (False, 10.0),
    ]
    assert all(n.startswith("predictor.") for n in by_group[2] | by_group[3])
    assert not any(n.startswith("predictor.") for n in by_group[0] | by_group[1])
    assert by_group[2] | by_group[3] == {n for n, _ in model.predictor.named_parameters(prefix="predictor")}
    assert [g["lars_adaptation"] for g in optimizer.param_groups] == [True, False, True, False]
    loop_module._set_schedules(optimizer, 0.2, 3e-4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.2, 0.2, 2.0, 2.0])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [3e-4, 0.0, 3e-4, 0.0]
    with pytest.raises(Exception, match="pred_lr_scale must be > 0"):
        tiny_byol_config(pred_lr_scale=0.0)


def test_the_predictor_lr_scale_reaches_the_loop_for_msbreg(tmp_path, monkeypatch):
    captured = _capture_optimizer(monkeypatch)
    pretrain(get_method("msbreg"), tiny_msbreg_config(pred_lr_scale=5.0), _args(tmp_path, max_steps=2))
    groups = captured["optimizer"].param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 5.0, 5.0]
    assert groups[2]["lr"] == pytest.approx(5 * groups[0]["lr"])
    assert math.isfinite(_losses(tmp_path / "run")[2])
