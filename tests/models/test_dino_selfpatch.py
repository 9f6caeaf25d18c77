"""DINO and SelfPatch: losses by hand, centres, the EMA teacher, SelfPatch's neighbours and aggregation, schedules,
export of the teacher, position-table ablation, views, exact resume, config errors and bf16."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import perturb_student, tiny_dino_config, tiny_selfpatch_config
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel, SiglipVisionModel, ViTModel

from ssl_hf import DINOForPreTraining, SelfPatchForPreTraining, get_method
from ssl_hf.export import export_pretrained
from ssl_hf.layers.ema import cosine_momentum
from ssl_hf.losses.distillation import dino_loss, patch_distillation_loss
from ssl_hf.models.selfpatch import SelfPatchAggregation, neighbor_index, top_neighbors
from ssl_hf.training import TrainingArguments, pretrain
from ssl_hf.training.optim import build_optimizer


MODELS = {
    "dino": (DINOForPreTraining, tiny_dino_config),
    "selfpatch": (SelfPatchForPreTraining, tiny_selfpatch_config),
}


def _model(name: str, seed: int = 0, **overrides):
    model_class, config = MODELS[name]
    torch.manual_seed(seed)
    return model_class(config(**overrides))


def _crops(batch=2, num_local=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, 3, 32, 32, generator=gen), torch.randn(batch, num_local, 3, 16, 16, generator=gen)


def _softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum()


def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    shifted = x - x.max()
    return shifted - torch.log(torch.exp(shifted).sum())


def _cross_entropy(teacher, center, tau_t, student, tau_s) -> float:
    """H(softmax((t - c) / tau_t), softmax(s / tau_s)) of one K-vector pair, by hand in float64."""
    q = _softmax((teacher.double() - center.double()) / tau_t)
    log_p = _log_softmax(student.double() / tau_s)
    return float(-(q * log_p).sum())


# ------------------------------------------------------------------------------------------------------- losses


def test_dino_loss_by_hand_skips_same_view_pairs():
    gen = torch.Generator().manual_seed(0)
    V, T, B, K = 3, 2, 2, 4
    # small student logits keep the loss near 1-3, where float32 resolves 1e-6
    student, teacher = 0.2 * torch.randn(V, B, K, generator=gen), torch.randn(T, B, K, generator=gen)
    center = torch.randn(K, generator=gen)
    tau_t, tau_s = 0.04, 0.1
    terms = []
    for t in range(T):
        for s in range(V):
            if s == t:
                continue
            terms.append(sum(_cross_entropy(teacher[t, b], center, tau_t, student[s, b], tau_s) for b in range(B)) / B)
    assert len(terms) == T * V - T
    expected = sum(terms) / len(terms)
    assert dino_loss(student, teacher, center, tau_t, tau_s).item() == pytest.approx(expected, abs=1e-6, rel=0)

    # V = T = 2: only (t=0, s=1) and (t=1, s=0) count. Changing the teacher's view 0 changes the loss by exactly half
    # the change of H(q_0, p_1) whatever the student's view 0 is, and the gradient on the student's view 0 only
    # depends on the teacher's view 1: both would fail if the (0, 0) pair were included.
    student2 = student[:2].clone().requires_grad_(True)
    teacher_a = teacher.clone()
    teacher_b = teacher.clone()
    teacher_b[0] = student[0] * 3.0  # a teacher view 0 close to the student's view 0: (0, 0) would shift a lot

    def h(teacher_view, student_view):
        return sum(_cross_entropy(teacher_view[b], center, tau_t, student_view[b], tau_s) for b in range(B)) / B

    loss_a = dino_loss(student2, teacher_a, center, tau_t, tau_s)
    (grad_a,) = torch.autograd.grad(loss_a, student2)
    loss_b = dino_loss(student2, teacher_b, center, tau_t, tau_s)
    (grad_b,) = torch.autograd.grad(loss_b, student2)
    expected_shift = (h(teacher_b[0], student[1]) - h(teacher_a[0], student[1])) / 2
    assert loss_b.item() - loss_a.item() == pytest.approx(expected_shift, abs=1e-5, rel=0)
    with_diagonal_shift = expected_shift + (h(teacher_b[0], student[0]) - h(teacher_a[0], student[0])) / 2
    assert abs(with_diagonal_shift - expected_shift) > 1e-2  # the check discriminates
    torch.testing.assert_close(grad_a[0], grad_b[0], atol=1e-7, rtol=0)
    assert not torch.allclose(grad_a[1], grad_b[1])  # the (0, 1) pair did change


def test_patch_distillation_loss_by_hand():
    gen = torch.Generator().manual_seed(0)
    B, K = 2, 5
    shapes = [(2, B, 4, K), (3, B, 1, K)]  # 2 crops of 4 patches, 3 crops of 1 patch
    student = [0.2 * torch.randn(s, generator=gen) for s in shapes]  # loss of a few units: float32 resolves 1e-6
    teacher = [torch.randn(s, generator=gen) for s in shapes]
    center, tau_t, tau_s = torch.randn(K, generator=gen), 0.05, 0.1
    per_crop = []
    for s_group, t_group in zip(student, teacher):
        for v in range(s_group.shape[0]):
            tokens = [
                _cross_entropy(t_group[v, b, i], center, tau_t, s_group[v, b, i], tau_s)
                for b in range(B)
                for i in range(s_group.shape[2])
            ]
            per_crop.append(sum(tokens) / len(tokens))
    assert len(per_crop) == 5
    expected = sum(per_crop) / 5
    got = patch_distillation_loss(student, teacher, center, tau_t, tau_s).item()
    assert got == pytest.approx(expected, abs=1e-6, rel=0)
    # equal weight per crop, not per token: the token-weighted mean is different here
    token_weighted = sum(per_crop[v] * (4 if v < 2 else 1) for v in range(5)) / (2 * 4 + 3 * 1)
    assert abs(token_weighted - expected) > 1e-3


# ------------------------------------------------------------------------------------------------------ centres


def test_dino_center_is_an_ema_of_teacher_outputs():
    model = _model("dino").train()
    with torch.no_grad():
        model.center.copy_(torch.randn(model.config.out_dim))
    old = model.center.clone()
    out = model(*_crops())
    assert out.teacher_logits.shape == (2, 2, 64)
    model.post_optimizer_step(1, 10)
    torch.testing.assert_close(model.center, 0.9 * old + 0.1 * out.teacher_logits.mean((0, 1)), atol=1e-6, rtol=0)

    # two micro-batches before one optimiser step: the mean of the two micro-batch means
    old = model.center.clone()
    first, second = model(*_crops(seed=1)), model(*_crops(batch=3, seed=2))
    means = (first.teacher_logits.mean((0, 1)) + second.teacher_logits.mean((0, 1))) / 2
    model.post_optimizer_step(2, 10)
    torch.testing.assert_close(model.center, 0.9 * old + 0.1 * means, atol=1e-6, rtol=0)

    # evaluation forwards queue no update
    model.eval()
    old = model.center.clone()
    model(*_crops(seed=3))
    model.post_optimizer_step(3, 10)
    assert torch.equal(model.center, old)


@pytest.mark.parametrize("include_locals", [True, False])
def test_selfpatch_centers(include_locals):
    model = _model("selfpatch", center_includes_local_crops=include_locals).train()
    with torch.no_grad():
        model.center.copy_(torch.randn(model.config.out_dim))
        model.patch_center.copy_(torch.randn(model.config.patch_out_dim))
    old_center, old_patch = model.center.clone(), model.patch_center.clone()
    patch_outputs = []
    hook = model.teacher_patch_head.register_forward_hook(lambda m, i, o: patch_outputs.append(o.detach()))
    out = model(*_crops())
    hook.remove()
    assert out.teacher_logits.shape[0] == 4  # the teacher runs on every crop (the patch loss needs them)
    assert [o.shape[:2] for o in patch_outputs] == [(2 * 2, 16), (2 * 2, 4)]  # globals 4x4 patches, locals 2x2
    model.post_optimizer_step(1, 10)
    rows = out.teacher_logits if include_locals else out.teacher_logits[:2]
    torch.testing.assert_close(model.center, 0.9 * old_center + 0.1 * rows.mean((0, 1)), atol=1e-6, rtol=0)
    token_mean = torch.cat([o.reshape(-1, o.shape[-1]) for o in patch_outputs]).mean(0)
    torch.testing.assert_close(model.patch_center, 0.9 * old_patch + 0.1 * token_mean, atol=1e-6, rtol=0)
    # the two choices really differ on this batch
    assert not torch.allclose(out.teacher_logits.mean((0, 1)), out.teacher_logits[:2].mean((0, 1)), atol=1e-4)


# ------------------------------------------------------------------------------------------------- EMA teacher


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ema_teacher_follows_the_cosine_momentum(name):
    model = _model(name, ema_base=0.99)
    assert model._student_modules
    for module in model._student_modules:
        student, teacher = getattr(model, module).state_dict(), getattr(model, f"teacher_{module}").state_dict()
        assert student.keys() == teacher.keys()
        assert all(torch.equal(student[k], teacher[k]) for k in student)
    with torch.no_grad():
        for module in model._student_modules:
            for p in getattr(model, module).parameters():
                p.add_(1.0)
    before = {n: p.clone() for n, p in model.named_parameters() if n.startswith("teacher_")}
    model.post_optimizer_step(25, 100)
    m = cosine_momentum(25, 100, 0.99)
    assert m == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    params = dict(model.named_parameters())
    for name_t, old in before.items():
        online = params[name_t.removeprefix("teacher_")]
        torch.testing.assert_close(params[name_t], m * old + (1 - m) * online, msg=name_t)
        assert not torch.equal(params[name_t], old)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_gradient_reaches_the_teacher(name):
    model = _model(name)
    model(*_crops()).loss.backward()
    teachers = [p for n, p in model.named_parameters() if n.startswith("teacher_")]
    assert teachers
    assert all(not p.requires_grad and p.grad is None for p in teachers)
    args = TrainingArguments().resolved({"weight_decay": 0.04})
    optimizer = build_optimizer("adamw", model, 1e-3, args, torch.device("cpu"))
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in teachers)
    trainable = {id(p) for n, p in model.named_parameters() if p.requires_grad}
    assert optimised == trainable
    assert all(not n.startswith("teacher_") for n, p in model.named_parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------- SelfPatch neighbours


def _brute_force_neighbours(height, width, r, c, wrap):
    found = set()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if (dr, dc) == (0, 0):
                continue
            rr, cc = r + dr, c + dc
            if wrap:
                found.add((rr % height) * width + cc % width)
            elif 0 <= rr < height and 0 <= cc < width:
                found.add(rr * width + cc)
    return found


def test_neighbor_table_with_wrap_around():
    index, valid = neighbor_index(4, 5, wrap=True)
    assert index.shape == valid.shape == (20, 8)
    assert index.dtype == torch.long
    assert valid.all()
    for i in range(20):
        row = index[i].tolist()
        assert len(set(row)) == 8, i
        assert i not in row
        assert set(row) == _brute_force_neighbours(4, 5, i // 5, i % 5, wrap=True)
    # corner (0, 0): rows {3, 0, 1} x cols {4, 0, 1} without itself; (3, 4) -> 19
    assert set(index[0].tolist()) == {19, 15, 16, 4, 1, 9, 5, 6}


def test_neighbor_table_without_wrap_masks_the_borders():
    index, valid = neighbor_index(4, 5, wrap=False)
    assert valid.sum(1).tolist() == [
        3 if r in (0, 3) and c in (0, 4) else 5 if r in (0, 3) or c in (0, 4) else 8
        for r in range(4)
        for c in range(5)
    ]
    assert set(index[0][valid[0]].tolist()) == {1, 5, 6}  # corner
    assert set(index[2][valid[2]].tolist()) == {1, 3, 6, 7, 8}  # top edge (0, 2)
    assert set(index[6][valid[6]].tolist()) == {0, 1, 2, 5, 7, 10, 11, 12}  # interior (1, 1)
    for i in range(20):
        assert set(index[i][valid[i]].tolist()) == _brute_force_neighbours(4, 5, i // 5, i % 5, wrap=False)
    assert ((index >= 0) & (index < 20)).all()  # placeholders stay gatherable


def _unit_tokens_with_similarities(num_patches: int, dim: int, anchor: int, similarity: dict[int, float]):
    """Tokens where `cos(token[anchor], token[j]) == similarity[j]` (and 0 for patches not listed)."""
    tokens = torch.zeros(num_patches, dim)
    tokens[anchor, 0] = 1.0
    for j in range(num_patches):
        if j == anchor:
            continue
        s = similarity.get(j, 0.0)
        tokens[j, 0] = s
        tokens[j, j + 1] = math.sqrt(1 - s * s)
    return tokens * torch.arange(1, num_patches + 1).view(-1, 1)  # norms differ: cosine, not dot product


def test_top_neighbors_picks_the_most_similar():
    index, valid = neighbor_index(3, 3, wrap=True)  # the centre patch 4 has all 8 others as candidates
    sims_0 = {0: 0.1, 1: 0.9, 2: -0.5, 3: 0.3, 5: 0.8, 6: 0.7, 7: 0.2, 8: 0.6}  # ranking: 1, 5, 6, 8, 3, ...
    sims_1 = {0: 0.95, 1: -0.2, 2: 0.4, 3: 0.1, 5: 0.0, 6: 0.5, 7: 0.85, 8: -0.9}  # ranking: 0, 7, 6, 2, ...
    tokens = torch.stack(
        [_unit_tokens_with_similarities(9, 10, 4, sims_0), _unit_tokens_with_similarities(9, 10, 4, sims_1)]
    )
    chosen, ok = top_neighbors(tokens, index, valid, k=2)
    assert chosen.shape == ok.shape == (2, 9, 2)
    assert ok.all()
    assert set(chosen[0, 4].tolist()) == {1, 5}
    assert set(chosen[1, 4].tolist()) == {0, 7}
    chosen, _ = top_neighbors(tokens, index, valid, k=4)
    assert set(chosen[0, 4].tolist()) == {1, 5, 6, 8}
    assert set(chosen[1, 4].tolist()) == {0, 7, 6, 2}
    with pytest.raises(ValueError, match="num_neighbors_k"):
        top_neighbors(tokens, index, valid, k=9)


def test_top_neighbors_never_selects_a_missing_border_candidate():
    index, valid = neighbor_index(3, 3, wrap=False)
    placeholders = set(index[0][~valid[0]].tolist())
    assert 0 in placeholders  # clamped positions point back at the corner itself (similarity 1)
    # the corner's real neighbours 1, 3, 4 point away from it; everything else (the placeholders too) equals it
    tokens = torch.ones(1, 9, 4)
    tokens[0, 1], tokens[0, 3], tokens[0, 4] = torch.tensor([-1.0, 0, 0, 0]), torch.tensor([0, -1.0, 0, 0]), -1.0
    chosen, ok = top_neighbors(tokens, index, valid, k=4)
    assert ok[0, 0].sum() == 3
    assert set(chosen[0, 0][ok[0, 0]].tolist()) == {1, 3, 4}
    assert not ok[0, 0, -1]  # the 4th slot is flagged
    assert ok[0, 4].all()  # the centre has 8 real candidates


# --------------------------------------------------------------------------------------------------- aggregation


def test_aggregate_with_a_mask_equals_aggregating_the_valid_neighbours_only():
    torch.manual_seed(0)
    aggregation = SelfPatchAggregation(32, 4, num_blocks=2).eval()
    B, N, k = 2, 9, 4
    tokens = torch.randn(B, N, 32)
    neighbors = torch.randint(0, N, (B, N, k))
    valid = torch.rand(B, N, k) < 0.6
    valid[..., 0] = True  # at least one real neighbour per patch
    valid[0, 0] = torch.tensor([True, False, False, False])
    valid[1, 2] = True
    assert not valid.all()
    with torch.no_grad():
        masked = aggregation.aggregate(tokens, neighbors, valid)
        unmasked = aggregation.aggregate(tokens, neighbors)
        for b in range(B):
            for n in range(N):
                subset = tokens[b, neighbors[b, n][valid[b, n]]][None]  # (1, valid count, D)
                torch.testing.assert_close(masked[b, n], aggregation._run(subset)[0], atol=1e-5, rtol=0)
        assert not torch.allclose(masked, unmasked, atol=1e-4)  # the mask matters
        torch.testing.assert_close(unmasked[1, 2], aggregation.pool(tokens[1, neighbors[1, 2]][None])[0])


def test_pool_is_permutation_invariant():
    torch.manual_seed(0)
    aggregation = SelfPatchAggregation(32, 4).eval()
    tokens = torch.randn(3, 16, 32)
    perm = torch.randperm(16)
    with torch.no_grad():
        torch.testing.assert_close(aggregation.pool(tokens[:, perm]), aggregation.pool(tokens), atol=1e-5, rtol=0)
        assert not torch.allclose(aggregation.pool(tokens[:, :8]), aggregation.pool(tokens), atol=1e-4)


# --------------------------------------------------------------------------------- lambda = 0 is DINO + pooling


def test_selfpatch_without_patch_loss_is_dino_on_pooled_tokens():
    with_head = _model("selfpatch", patch_loss_weight=0.0, center_includes_local_crops=False).train()
    without = _model("selfpatch", seed=5, use_patch_loss=False, center_includes_local_crops=False).train()
    info = without.load_state_dict(with_head.state_dict(), strict=False)
    assert not info.missing_keys
    assert info.unexpected_keys
    assert all(k.startswith(("patch_head.", "teacher_patch_head.", "patch_center")) for k in info.unexpected_keys)
    assert not hasattr(without, "patch_head")
    for model in (with_head, without):
        with torch.no_grad():
            model.center.copy_(torch.linspace(-1, 1, 64))
    crops = _crops()
    out_a, out_b = with_head(*crops), without(*crops)
    assert out_a.loss_patch is not None
    assert out_b.loss_patch is None
    assert out_a.loss.item() == out_a.loss_image.item()
    expected = dino_loss(
        out_a.student_logits, out_a.teacher_logits[:2], with_head.center, with_head.teacher_temperature(), 0.1
    )
    torch.testing.assert_close(out_a.loss, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_b.loss, out_a.loss, atol=1e-6, rtol=0)
    out_a.loss.backward()
    out_b.loss.backward()
    params_a = dict(with_head.named_parameters())
    compared = 0
    for name, p in without.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, params_a[name].grad, atol=1e-6, rtol=0, msg=name)
            compared += 1
    assert compared > 20
    with_head.post_optimizer_step(1, 10)
    without.post_optimizer_step(1, 10)
    torch.testing.assert_close(with_head.center, without.center, atol=1e-7, rtol=0)


# ------------------------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("name", sorted(MODELS))
def test_last_layer_is_frozen_for_the_first_fraction(name):
    model = _model(name, freeze_last_layer_fraction=0.5).train()
    heads = [model.head] + ([model.patch_head] if name == "selfpatch" else [])
    assert model.last_layer_frozen()
    model(*_crops()).loss.backward()
    for head in heads:
        assert torch.equal(head.last_layer.weight.grad, torch.zeros_like(head.last_layer.weight))
        assert all(p.grad.abs().sum() > 0 for p in head.mlp.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.04)
    rows = [F.normalize(h.last_layer.weight.detach(), dim=1).clone() for h in heads]
    raw = [h.last_layer.weight.detach().clone() for h in heads]
    mlp = heads[0].mlp[0].weight.detach().clone()
    optimizer.step()
    for head, before, before_raw in zip(heads, rows, raw):
        after = head.last_layer.weight.detach()
        assert not torch.equal(after, before_raw)  # weight decay did rescale V ...
        torch.testing.assert_close(F.normalize(after, dim=1), before, atol=1e-6, rtol=0)  # ... the function is kept
    assert not torch.allclose(heads[0].mlp[0].weight, mlp)
    optimizer.zero_grad(set_to_none=True)

    model.post_optimizer_step(6, 10)
    assert model.progress.item() == pytest.approx(0.6)
    assert not model.last_layer_frozen()
    model(*_crops()).loss.backward()
    for head in heads:
        assert head.last_layer.weight.grad.abs().sum() > 0
    model.eval()
    model.progress.zero_()
    assert not model.last_layer_frozen()  # never frozen outside training


def test_teacher_temperature_warm_up():
    model = _model(
        "dino", warmup_teacher_temp=0.04, teacher_temp=0.07, teacher_temp_warmup_fraction=0.5, ema_base=1.0
    ).train()
    teacher = {k: v.clone() for k, v in model.teacher_backbone.state_dict().items()}
    assert model.teacher_temperature() == pytest.approx(0.04)
    model.post_optimizer_step(1, 4)
    assert model.teacher_temperature() == pytest.approx(0.055)
    out = model(*_crops())  # the forward uses the scheduled temperature
    expected = dino_loss(out.student_logits, out.teacher_logits, model.center, 0.055, 0.1)
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=0)
    assert abs(dino_loss(out.student_logits, out.teacher_logits, model.center, 0.07, 0.1) - out.loss) > 1e-4
    model.post_optimizer_step(2, 4)
    assert model.teacher_temperature() == pytest.approx(0.07)
    model.post_optimizer_step(3, 4)
    assert model.teacher_temperature() == pytest.approx(0.07)
    assert all(torch.equal(v, teacher[k]) for k, v in model.teacher_backbone.state_dict().items())  # momentum 1


# --------------------------------------------------------------------------------------------------------- export


def test_dino_export_is_the_teacher(tmp_path):
    model = _model("dino").eval()
    perturb_student(model)
    export_pretrained(model, tmp_path)
    exported = AutoModel.from_pretrained(tmp_path).eval()
    assert type(exported) is ViTModel
    x = _crops()[0][:, 0]
    with torch.no_grad():
        got = exported(x).last_hidden_state
        torch.testing.assert_close(got, model.teacher_backbone(x).last_hidden_state, atol=1e-6, rtol=0)
        assert not torch.allclose(got, model.backbone(x).last_hidden_state, atol=1e-3)


def test_selfpatch_export_is_the_cls_free_teacher(tmp_path):
    from PIL import Image
    from transformers import pipeline

    model = _model("selfpatch").eval()
    perturb_student(model)
    export_pretrained(model, tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is SiglipVisionModel
    x = _crops()[0][:, 0]
    with torch.no_grad():
        got = exported(x).last_hidden_state
        assert got.shape == (2, (32 // 8) ** 2, 32)  # no cls token
        raw, norm, grid = model._tokens("teacher_", x)  # the tokens the teacher ranks neighbours with
        assert norm is model.teacher_backbone.post_layernorm
        assert grid == (4, 4)
        torch.testing.assert_close(got, model.teacher_backbone.post_layernorm(raw), atol=1e-6, rtol=0)
        raw_student, norm_student, _ = model._tokens("", x)
        assert not torch.allclose(got, norm_student(raw_student), atol=1e-3)

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    features = np.asarray(pipeline("image-feature-extraction", model=str(tmp_path / "export"))(image))
    assert features.shape == (1, 16, 32)
    assert np.isfinite(features).all()

    with pytest.raises(ValueError, match="cls token"):
        export_pretrained(model, tmp_path / "dinov2", export_format="dinov2")

    with_cls = _model("selfpatch", backbone_cls_token=True).eval()
    export_pretrained(with_cls, tmp_path / "vit")
    assert type(AutoModel.from_pretrained(tmp_path / "vit")) is ViTModel


# -------------------------------------------------------------------------------------- no position embeddings


@pytest.mark.parametrize("cls_token", [False, True])
def test_without_position_embeddings_the_table_stays_zero(cls_token, tmp_path):
    model = _model("selfpatch", use_position_embeddings=False, backbone_cls_token=cls_token)
    table = model._position_table(model.backbone)
    assert torch.equal(table, torch.zeros_like(table))
    assert not table.requires_grad
    assert torch.equal(model._position_table(model.teacher_backbone), torch.zeros_like(table))
    default = _model("selfpatch", backbone_cls_token=cls_token)
    assert default._position_table(default.backbone).abs().sum() > 0  # the switch is what zeroes it
    assert default._position_table(default.backbone).requires_grad

    model.train()
    model(*_crops()).loss.backward()
    args = TrainingArguments().resolved({"weight_decay": 0.04})
    build_optimizer("adamw", model, 1e-2, args, torch.device("cpu")).step()
    assert torch.equal(table, torch.zeros_like(table))

    model.save_pretrained(tmp_path)
    reloaded = SelfPatchForPreTraining.from_pretrained(tmp_path)
    table = reloaded._position_table(reloaded.backbone)
    assert torch.equal(table, torch.zeros_like(table))
    assert not table.requires_grad
    assert torch.equal(reloaded._position_table(reloaded.teacher_backbone), torch.zeros_like(table))


# ---------------------------------------------------------------------------------------------------------- views


def test_multicrop_views_feed_the_model():
    from ssl_hf.data.views import build_views

    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 40, 48), generator=gen, dtype=torch.uint8) for _ in range(3)]
    rngs = [np.random.default_rng(i) for i in range(3)]
    views = build_views("multicrop", tiny_dino_config())(images, rngs)
    assert views["pixel_values"].shape == (3, 2, 3, 32, 32)
    assert views["local_pixel_values"].shape == (3, 2, 3, 16, 16)
    assert views["pixel_values"].dtype == torch.float32
    out = _model("selfpatch")(**views)
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------------- kill and resume


@pytest.mark.parametrize("name", sorted(MODELS))
def test_resume_continues_exactly(name, tmp_path, monkeypatch):
    """Teacher, centres and progress (here driving the temperature warm-up and the frozen last layer) survive."""
    from accelerate.state import AcceleratorState

    from ssl_hf.training import loop as loop_module

    spec = get_method(name)
    config = MODELS[name][1](
        teacher_temp=0.07, teacher_temp_warmup_fraction=1.0, freeze_last_layer_fraction=0.6, ema_base=0.9
    )

    def args(run, **overrides):
        fields = dict(dataset="digits", output_dir=str(tmp_path / run), max_steps=4, batch_size=8, save_steps=2)
        return TrainingArguments(**{**fields, "learning_rate": 1e-2, "warmup_steps": 1, **overrides})

    pretrain(spec, config, args("full"))
    real_save = loop_module.save_checkpoint

    def save_then_die(accelerator, out, state, keep):
        real_save(accelerator, out, state, keep)
        raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(spec, config, args("resumed"))
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.startswith("step_")] == [
        "step_2"
    ]
    AcceleratorState._reset_state(True)
    pretrain(spec, config, args("resumed", resume_from_checkpoint="latest"))

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    full, resumed = losses("full"), losses("resumed")
    assert len(full) == len(resumed) == 4
    assert resumed == pytest.approx(full, abs=1e-6, rel=0)
    final_full = get_method(name).model_class.from_pretrained(tmp_path / "full" / "final")
    final_resumed = get_method(name).model_class.from_pretrained(tmp_path / "resumed" / "final")
    assert final_full.progress.item() == 1.0
    for (key, a), b in zip(final_full.state_dict().items(), final_resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=key)


# ---------------------------------------------------------------------------------------------------------- errors


def test_config_errors_are_explained():
    cases = [
        (lambda: tiny_dino_config(local_crop_size=12), "local_crop_size=12 is not a multiple of the patch size 8"),
        (lambda: tiny_selfpatch_config(local_crop_size=20), "local_crop_size=20"),
        (lambda: tiny_selfpatch_config(num_neighbors_k=9), "num_neighbors_k must be in \\[1, 8\\]"),
        (lambda: tiny_selfpatch_config(num_neighbors_k=0), "num_neighbors_k"),
        (lambda: tiny_selfpatch_config(neighborhood_size=4), "neighborhood_size must be an odd number"),
    ]
    for build, message in cases:
        with pytest.raises(StrictDataclassClassValidationError, match=message) as info:
            build()
        assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="neighborhood_size"):
        neighbor_index(4, 4, size=4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_single_image_pixel_values_are_explained(name):
    model = _model(name)
    with pytest.raises(ValueError, match="crops"):
        model(torch.randn(2, 3, 32, 32))


# ------------------------------------------------------------------------------------------------------------ bf16


@pytest.mark.parametrize(
    ("name", "overrides"), [("dino", {}), ("selfpatch", {}), ("selfpatch", {"wrap_neighbors": False})]
)
def test_bf16_autocast_gives_finite_loss_and_gradients(name, overrides):
    model = _model(name, **overrides).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_crops())
    assert out.student_logits.dtype == torch.bfloat16  # autocast is really on
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.post_optimizer_step(1, 10)
    assert torch.isfinite(model.center).all()


def test_dino_loss_stays_float32_under_bf16_autocast():
    """`dino_loss` promises a float32 loss (its inputs are cast to float32), as `patch_distillation_loss` gives.

    Under CPU/CUDA autocast the `einsum` that sums `q * log p` over the K prototypes is an autocast op, so q and
    log p are rounded to bf16 first and the loss comes back in bf16 (0.1-0.2 % off for K = 4096-65536 in practice).
    """
    gen = torch.Generator().manual_seed(0)
    K = 4096
    student, teacher = 3 * torch.randn(4, 8, K, generator=gen), 3 * torch.randn(2, 8, K, generator=gen)
    center = torch.zeros(K)
    expected = dino_loss(student, teacher, center, 0.04, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dino_loss(student, teacher, center, 0.04, 0.1)
        patch = patch_distillation_loss(
            [student[:, :, None]], [teacher[:1].expand(4, -1, -1)[:, :, None]], center, 0.04
        )
    assert patch.dtype == torch.float32  # the patch loss already keeps float32 under autocast
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-6)
