"""Dense patch probe: `dense_probe` and its IoU arithmetic, patch tokens of ViT / SigLIP, `evaluate_backbone` end to end."""

import json
import math

import pytest
import torch
from transformers import ResNetConfig, ResNetModel, SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

from ssl_hf.data.builtin import BACKGROUND_CLASS
from ssl_hf.evaluation import (
    PROTOCOLS,
    confusion_matrix,
    dense_probe,
    evaluate_backbone,
    evaluate_dense,
    has_cls_token,
    iou_metrics,
    patch_tokens,
    pooled_features,
    resize_segmentation,
)


NUM_CLASSES = BACKGROUND_CLASS + 1
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)


def _scenes(n, grid=4, patch=4, seed=0):
    """Patch-aligned segmentations: every patch is background (p = 0.5) or one of the 10 digit classes."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, BACKGROUND_CLASS, (n, grid * grid), generator=g)
    classes[torch.rand(n, grid * grid, generator=g) < 0.5] = BACKGROUND_CLASS
    seg = classes.view(n, grid, grid).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return classes, seg.reshape(n, -1).to(torch.uint8)


def _tokens(classes, dim=24, noise=0.3, informative=True, seed=0):
    """`(N, L, dim)` tokens: 3 * one-hot(class) + noise, or pure noise."""
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.randn(*classes.shape, dim, generator=g)
    if informative:
        x += 3.0 * torch.nn.functional.one_hot(classes, dim).float()
    return x


@pytest.fixture(scope="module")
def scenes():
    return _scenes(300, seed=0), _scenes(100, seed=1)


def test_informative_tokens_segment_almost_perfectly(scenes):
    (train_c, train_seg), (test_c, test_seg) = scenes
    result = dense_probe(_tokens(train_c, seed=2), train_seg, _tokens(test_c, seed=3), test_seg, 4, 16, epochs=5)
    assert result["mean_iou"] > 95
    assert result["pixel_accuracy"] > 95
    # patch-aligned maps: each patch's majority class is every one of its pixels
    assert result["pixel_accuracy"] == pytest.approx(result["patch_accuracy"])
    assert len(result["per_class_iou"]) == NUM_CLASSES
    assert all(v is not None and v > 90 for v in result["per_class_iou"])
    assert result["num_train_patches"] == 300 * 16
    assert result["num_test_patches"] == 100 * 16


def test_noise_tokens_give_a_low_mean_iou(scenes):
    (train_c, train_seg), (test_c, test_seg) = scenes
    noise = dict(informative=False, noise=1.0)
    result = dense_probe(
        _tokens(train_c, seed=2, **noise), train_seg, _tokens(test_c, seed=3, **noise), test_seg, 4, 16, epochs=5
    )
    assert result["mean_iou"] < 25  # background alone is half the patches: at most ~50 / 11 from it
    assert result["pixel_accuracy"] < 65


def test_dense_probe_is_deterministic(scenes):
    (train_c, train_seg), (test_c, test_seg) = scenes
    args = (_tokens(train_c, noise=2.0, seed=2), train_seg, _tokens(test_c, noise=2.0, seed=3), test_seg, 4, 16)
    assert dense_probe(*args, epochs=2, seed=5) == dense_probe(*args, epochs=2, seed=5)


def test_patch_predictions_are_upsampled_and_scored_against_full_resolution_pixels():
    # one 8x8 image, 2x2 grid of patch 4; the top-left patch is 12 pixels of class 1 and 4 of class 0
    train_c, train_seg = _scenes(200, grid=2, seed=0)
    seg = torch.full((1, 8, 8), BACKGROUND_CLASS, dtype=torch.uint8)
    seg[0, :4, :4] = 1
    seg[0, :2, :2] = 0
    tokens = _tokens(torch.tensor([[1, BACKGROUND_CLASS, BACKGROUND_CLASS, BACKGROUND_CLASS]]), seed=4)
    result = dense_probe(_tokens(train_c, seed=2), train_seg, tokens, seg, 4, 8, epochs=5)
    assert result["patch_accuracy"] == 100.0  # the patch's majority class is 1
    assert result["pixel_accuracy"] == pytest.approx(100 * 60 / 64)
    # class 0: never predicted, 4 pixels missed -> IoU 0; class 1: 12 / 16; background: 48 / 48
    expected = [0.0, 75.0] + [None] * 8 + [100.0]
    assert result["per_class_iou"] == pytest.approx(expected)
    assert result["mean_iou"] == pytest.approx(175 / 3)


def test_iou_arithmetic_on_a_hand_confusion_matrix():
    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 0])
    confusion = confusion_matrix(pred, target, 4)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    metrics = iou_metrics(confusion)
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 1, FP 1, FN 1 -> 1/3; class 2: TP 3, FP 1, FN 1 -> 3/5
    assert metrics["per_class_iou"][:3] == pytest.approx([50.0, 100 / 3, 60.0])
    assert metrics["per_class_iou"][3] is None  # class 3 is absent: not part of the mean
    assert metrics["mean_iou"] == pytest.approx((50 + 100 / 3 + 60) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(100 * 6 / 9)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(pred, target, 2)


def test_grid_mismatch_names_the_numbers(scenes):
    (train_c, train_seg), _ = scenes
    tokens = _tokens(train_c)  # 16 tokens per image: a 4x4 grid
    with pytest.raises(ValueError, match=r"16 tokens.*image_size 32 // patch_size 4 = 8.*64 patch tokens"):
        dense_probe(tokens, train_seg, tokens, train_seg, 4, 32)
    with pytest.raises(ValueError, match=r"256 pixels, not image_size 8 squared"):
        dense_probe(tokens, train_seg, tokens, train_seg, 2, 8)
    with pytest.raises(ValueError, match="must divide"):
        dense_probe(tokens, train_seg, tokens, train_seg, 5, 16)


def test_resize_segmentation_is_nearest():
    seg = torch.tensor([[0, 1, 2, 3]], dtype=torch.uint8)  # a 2x2 map
    big = resize_segmentation(seg, 4).view(4, 4)
    assert big.dtype == torch.uint8
    assert big.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert resize_segmentation(seg, 2).tolist() == seg.tolist()


# ------------------------------------------------------------------------------------------- patch tokens


def test_patch_tokens_of_a_vit_drop_the_cls_token():
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(image_size=16, patch_size=4, **TINY), add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = patch_tokens(model, pixels)
        hidden = model(pixel_values=pixels).last_hidden_state
        assert has_cls_token(model)
        assert tokens.shape == (2, (16 // 4) ** 2, 32)
        torch.testing.assert_close(tokens, hidden[:, 1:])
        torch.testing.assert_close(pooled_features(model, pixels, "cls"), hidden[:, 0])
        torch.testing.assert_close(pooled_features(model, pixels, "mean"), hidden[:, 1:].mean(1))


def test_patch_tokens_of_a_siglip_tower_keep_every_token():
    torch.manual_seed(0)
    config = SiglipVisionConfig(image_size=16, patch_size=4, vision_use_head=False, **TINY)
    model = SiglipVisionModel(config).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(pixel_values=pixels)
        assert out.pooler_output is None
        assert not has_cls_token(model)
        tokens = patch_tokens(model, pixels)
        assert tokens.shape == (2, (16 // 4) ** 2, 32)
        torch.testing.assert_close(tokens, out.last_hidden_state)
        for pool in ("cls", "mean"):  # no cls token: both are the mean of all tokens
            torch.testing.assert_close(pooled_features(model, pixels, pool), out.last_hidden_state.mean(1))


def test_patch_tokens_reject_a_resnet():
    model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1])).eval()
    assert not has_cls_token(model)
    with torch.no_grad(), pytest.raises(ValueError, match="CNNs such as ResNet"):
        patch_tokens(model, torch.randn(1, 3, 32, 32))


# --------------------------------------------------------------------------------------------- end to end


def _export(root, model):
    model.save_pretrained(root)
    size = model.config.image_size
    spec = {"size": {"height": size, "width": size}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (root / "preprocessor_config.json").write_text(json.dumps(spec))
    return str(root)


@pytest.fixture(scope="module")
def vit_export(tmp_path_factory):
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=4, **TINY)
    return _export(tmp_path_factory.mktemp("dense") / "vit", ViTModel(config, add_pooling_layer=False))


FAST = dict(max_train_images=48, max_test_images=24, dense_epochs=2, batch_size=64)


def test_evaluate_backbone_dense_end_to_end(vit_export):
    assert "dense" in PROTOCOLS
    (result,) = evaluate_backbone(vit_export, protocols=("dense",), **FAST)
    assert result["protocol"] == "dense"
    assert result["dataset"] == "digit-scenes"
    assert result["backbone"] == "pretrained"
    assert (result["patch_size"], result["image_size"]) == (4, 32)
    assert result["settings"] == "BN+linear per patch, SGD 2 ep, 8x8 patches of 4 px"
    assert (result["num_train"], result["num_test"]) == (48, 24)
    assert result["num_train_patches"] == 48 * 64
    for key in ("mean_iou", "pixel_accuracy", "patch_accuracy"):
        assert math.isfinite(result[key])
        assert 0 <= result[key] <= 100
    assert result["per_class_iou"][BACKGROUND_CLASS] is not None  # background is in every scene
    json.dumps(result)  # JSON-ready


def test_dense_runs_next_to_image_protocols_and_on_a_siglip_tower(tmp_path, vit_export):
    results = evaluate_backbone(vit_export, "digits", protocols=("dense", "knn"), k=5, **FAST)
    assert [r["protocol"] for r in results] == ["dense", "knn"]
    assert results[1]["dataset"] == "digits"
    assert 0 <= results[1]["top1"] <= 1

    torch.manual_seed(0)
    config = SiglipVisionConfig(image_size=32, patch_size=4, vision_use_head=False, **TINY)
    siglip = _export(tmp_path / "siglip", SiglipVisionModel(config))
    result = evaluate_dense(siglip, **FAST)
    assert result["num_test_patches"] == 24 * 64
    assert 0 <= result["mean_iou"] <= 100


def test_dense_needs_a_segmentation_column(vit_export):
    with pytest.raises(ValueError, match=r"no 'segmentation' column.*--dataset digit-scenes"):
        evaluate_dense(vit_export, "digits", **FAST)
