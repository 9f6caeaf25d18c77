"""LARS (`ssl_hf.training.lars`): the update rule by hand, trust-ratio scale invariance, fallbacks, momentum, the
non-adapted group, `build_lars` grouping, state_dict round trip and convergence on a toy regression."""

import copy
import io

import pytest
import torch
from torch import nn

from ssl_hf.training.lars import LARS, build_lars


def _lars_reference(p, g, buf, lr, momentum, weight_decay, eta, eps, adapt):
    """The documented update on plain tensors; returns the new (p, buf)."""
    if adapt:
        g = g + weight_decay * p
        p_norm, g_norm = p.norm(), g.norm()
        q = eta * p_norm / (g_norm + eps) if p_norm > 0 and g_norm > 0 else 1.0
        g = q * g
    buf = momentum * buf + g
    return p - lr * buf, buf


def _toy(dtype=torch.float64):
    weight = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=dtype))
    bias = nn.Parameter(torch.tensor([0.3, -0.7], dtype=dtype))
    return weight, bias


def test_one_step_matches_formula_by_hand():
    weight, bias = _toy()
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    gw = torch.tensor([[0.1, 0.4], [-0.3, 0.2]], dtype=torch.float64)
    gb = torch.tensor([0.05, -0.5], dtype=torch.float64)
    weight.grad, bias.grad = gw.clone(), gb.clone()
    lr, wd, eta, eps = 0.5, 0.1, 0.01, 1e-8
    opt = LARS(
        [
            {"params": [weight], "weight_decay": wd},
            {"params": [bias], "weight_decay": 0.3, "lars_adaptation": False},  # decay ignored when not adapted
        ],
        lr=lr,
        momentum=0.9,
        trust_coefficient=eta,
        eps=eps,
    )
    opt.step()

    g = gw + wd * w0
    q = eta * torch.linalg.norm(w0) / (torch.linalg.norm(g) + eps)
    torch.testing.assert_close(weight.detach(), w0 - lr * q * g, rtol=0, atol=1e-15)
    torch.testing.assert_close(bias.detach(), b0 - lr * gb, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[weight]["momentum_buffer"], q * g)
    torch.testing.assert_close(opt.state[bias]["momentum_buffer"], gb)


def _linear_step(loss_scale):
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    opt = LARS(
        [
            {"params": [model.weight]},
            {"params": [model.bias], "lars_adaptation": False},
        ],
        lr=0.1,
        weight_decay=0.0,
        trust_coefficient=0.01,
    )
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    (loss_scale * model(x).pow(2).mean()).backward()
    opt.step()
    return {k: model.state_dict()[k] - before[k] for k in before}


def test_trust_ratio_makes_adapted_step_independent_of_gradient_scale():
    step1, step10 = _linear_step(1.0), _linear_step(10.0)
    torch.testing.assert_close(step10["weight"], step1["weight"])
    # the adapted step has size lr * eta * ||w||, whatever the gradient
    torch.manual_seed(0)
    w_norm = nn.Linear(8, 4).weight.norm()
    torch.testing.assert_close(step1["weight"].norm(), 0.1 * 0.01 * w_norm)
    # the non-adapted bias is plain SGD: its step scales with the loss
    torch.testing.assert_close(step10["bias"], 10 * step1["bias"])


def test_zero_param_or_zero_grad_fall_back_to_ratio_one():
    zero_param = nn.Parameter(torch.zeros(3))
    zero_grad = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    grad = torch.tensor([0.5, -1.0, 2.0])
    zero_param.grad, zero_grad.grad = grad.clone(), torch.zeros(3)
    opt = LARS([zero_param, zero_grad], lr=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001)
    opt.step()
    torch.testing.assert_close(zero_param.detach(), -0.1 * grad)  # ratio 1, not eta * 0 / ||g|| = 0
    torch.testing.assert_close(zero_grad.detach(), torch.tensor([1.0, 2.0, 3.0]))  # no NaN from 0 / 0
    # zero param with weight decay: wd * p = 0 leaves the gradient, ratio still 1
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    LARS([p], lr=1.0, weight_decay=0.5).step()
    torch.testing.assert_close(p.detach(), torch.tensor([-3.0, -4.0]))


def test_momentum_accumulates_over_steps():
    weight, bias = _toy()
    lr, momentum, wd, eta, eps = 0.2, 0.9, 0.05, 0.02, 1e-8
    opt = LARS(
        [{"params": [weight]}, {"params": [bias], "lars_adaptation": False}],
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        trust_coefficient=eta,
        eps=eps,
    )
    ref_w, ref_b = weight.detach().clone(), bias.detach().clone()
    buf_w, buf_b = torch.zeros_like(ref_w), torch.zeros_like(ref_b)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        gw = torch.randn(2, 2, generator=gen, dtype=torch.float64)
        gb = torch.randn(2, generator=gen, dtype=torch.float64)
        weight.grad, bias.grad = gw.clone(), gb.clone()
        opt.step()
        ref_w, buf_w = _lars_reference(ref_w, gw, buf_w, lr, momentum, wd, eta, eps, adapt=True)
        ref_b, buf_b = _lars_reference(ref_b, gb, buf_b, lr, momentum, wd, eta, eps, adapt=False)
        torch.testing.assert_close(weight.detach(), ref_w)
        torch.testing.assert_close(bias.detach(), ref_b)
        torch.testing.assert_close(opt.state[weight]["momentum_buffer"], buf_w)

    # a constant gradient on the plain group builds v_k = (1 + m + ... + m^(k-1)) g
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt = LARS([p], lr=0.1, momentum=momentum, lars_adaptation=False)
    for _ in range(3):
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], (1 + momentum + momentum**2) * g)
    torch.testing.assert_close(p.detach(), -0.1 * (1 + (1 + momentum) + (1 + momentum + momentum**2)) * g)


def test_non_adapted_group_is_plain_sgd_with_momentum():
    torch.manual_seed(0)
    a = nn.Linear(6, 3)
    b = copy.deepcopy(a)
    lars = LARS(a.parameters(), lr=0.05, momentum=0.9, weight_decay=0.3, lars_adaptation=False)  # decay ignored
    sgd = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(10, 6, generator=gen)
        for model, opt in ((a, lars), (b, sgd)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def _ids(params):
    return {id(p) for p in params}


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.head(self.ln(self.bn(self.fc(x))))


def test_build_lars_excludes_biases_and_norms_from_adaptation():
    model = _Net()
    opt = build_lars(model, lr=0.3, weight_decay=1.5e-6, momentum=0.8, trust_coefficient=0.002)
    assert isinstance(opt, LARS)
    adapted, plain = opt.param_groups
    assert adapted["lars_adaptation"] is True
    assert adapted["weight_decay"] == 1.5e-6
    assert plain["lars_adaptation"] is False
    assert plain["weight_decay"] == 0.0
    assert _ids(adapted["params"]) == _ids([model.fc.weight, model.head.weight])
    expected_plain = [model.fc.bias, model.bn.weight, model.bn.bias, model.ln.weight, model.ln.bias]
    assert _ids(plain["params"]) == _ids(expected_plain)
    for group in opt.param_groups:
        assert group["lr"] == 0.3
        assert group["momentum"] == 0.8
        assert group["trust_coefficient"] == 0.002
    # frozen parameters are left out
    assert not _ids(model.frozen.parameters()) & _ids(adapted["params"] + plain["params"])


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 4, generator=gen), torch.randn(8, 2, generator=gen)) for _ in range(6)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    opt = build_lars(model, lr=0.5, weight_decay=1e-4, trust_coefficient=0.01)
    _train(model, opt, batches[:3])

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    _train(model, opt, batches[3:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    restored.load_state_dict(saved["model"])
    restored_opt = build_lars(restored, lr=0.5, weight_decay=1e-4, trust_coefficient=0.01)
    restored_opt.load_state_dict(saved["opt"])
    assert [g["lars_adaptation"] for g in restored_opt.param_groups] == [True, False]
    _train(restored, restored_opt, batches[3:])

    for pa, pb in zip(model.parameters(), restored.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_tiny_regression_converges():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    w_true = torch.randn(8, 1, generator=gen)
    y = x @ w_true + 0.5
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    steps = 300
    opt = build_lars(model, lr=0.1, weight_decay=0.0, momentum=0.9, trust_coefficient=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)  # the fixed-size LARS step needs decay
    initial = nn.functional.mse_loss(model(x), y).item()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
    final = nn.functional.mse_loss(model(x), y).item()
    assert final < 1e-3 * initial


def test_closure_none_grads_and_sparse_grads():
    used, unused = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = LARS([used, unused], lr=0.1, trust_coefficient=0.01)

    def closure():
        opt.zero_grad()
        loss = (used * 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 6.0
    assert not torch.equal(used.detach(), torch.ones(3))
    torch.testing.assert_close(unused.detach(), torch.ones(3))  # grad is None: skipped, no state
    assert unused not in opt.state

    emb = nn.Embedding(5, 3, sparse=True)
    opt = LARS(emb.parameters(), lr=0.1)
    emb(torch.tensor([0, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -1.0}, {"momentum": -0.1}, {"weight_decay": -1e-4}, {"trust_coefficient": 0.0}, {"eps": -1.0}],
)
def test_invalid_hyperparameters_raise(kwargs):
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match="Invalid"):
        LARS([nn.Parameter(torch.ones(1))], **kwargs)
