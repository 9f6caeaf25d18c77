"""Run monitoring (`ssl_hf.training.monitor`): the online k-NN and the collapse alarms watch a run without changing it
(same losses, same final weights, exact resume), and the statistics and alarms behave on synthetic outputs."""

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import (
    pretrain_killed_after,
    reset_accelerate,
    tiny_byol_config,
    tiny_dino_config,
    tiny_dino_resnet_config,
    tiny_training_args,
    write_square_folders,
)
from safetensors.torch import load_file

from ssl_hf import BYOLForPreTraining, DINOForPreTraining, get_method
from ssl_hf.evaluation.features import calibrate_batchnorm
from ssl_hf.training import pretrain
from ssl_hf.training.monitor import (
    CollapseAlarms,
    OnlineKNN,
    collapse_statistics,
    preserved_state,
)


TINY = {"byol": tiny_byol_config, "dino": tiny_dino_config}  # a ResNet with BatchNorm, and a ViT


def _args(out, labelled, monitor: bool, **overrides):
    monitoring = dict(eval_every=2 if monitor else 0, eval_dataset=str(labelled), eval_max_images=9, alarms=monitor)
    fields = dict(max_steps=5, save_steps=5, warmup_steps=1, **monitoring)
    return tiny_training_args(out, **{**fields, **overrides})


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir):
    """`{step: {loss name: value}}` of the training steps."""
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("loss")} for r in _records(run_dir) if "loss" in r}


def _assert_same_weights(final_a, final_b):
    a, b = load_file(str(final_a / "model.safetensors")), load_file(str(final_b / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, different


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Train/test imagefolder of three noisy grey levels (overlapping, so the k-NN is not trivially 100 %)."""
    return write_square_folders(tmp_path_factory.mktemp("labelled"), {"dark": 70, "mid": 128, "bright": 186}, 4, 90)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, labelled):
    """The same tiny BYOL and DINO runs with the monitor off and on (5 steps, k-NN every 2)."""
    root = tmp_path_factory.mktemp("runs")
    finals = {}
    for method, config in TINY.items():
        for monitor in (False, True):
            out = root / f"{method}_{'on' if monitor else 'off'}"
            finals[method, monitor] = pretrain(get_method(method), config(), _args(out, labelled, monitor))
            reset_accelerate()
    return finals


@pytest.mark.parametrize("method", sorted(TINY))
def test_monitor_does_not_change_the_run(runs, method):
    """BYOL's BatchNorm running statistics would move if the k-NN ran in train mode: the final weights catch it."""
    off, on = runs[method, False], runs[method, True]
    losses_off, losses_on = _losses(off.parent), _losses(on.parent)
    assert sorted(losses_on) == [1, 2, 3, 4, 5]
    assert losses_on == losses_off  # exactly, every loss term of every step
    _assert_same_weights(off, on)
    assert not any("knn_top1" in r for r in _records(off.parent))


@pytest.mark.parametrize(("method", "statistic"), [("byol", "embedding_std"), ("dino", "teacher_entropy")])
def test_knn_logged_at_start_every_eval_every_and_at_the_end(runs, labelled, method, statistic):
    final = runs[method, True]
    records = _records(final.parent)
    knn = {r["step"]: r["knn_top1"] for r in records if "knn_top1" in r}
    assert sorted(knn) == [0, 2, 4, 5]  # start, every 2 steps, and the last step (5)
    assert all(0 <= v <= 100 for v in knn.values())
    assert set(records[0]) == {"step", "epoch", "knn_top1", "knn_floor", "knn_seconds"}
    assert records[0]["knn_top1"] == knn[0]
    assert 0 <= records[0]["knn_floor"] <= 100
    assert all(statistic in r for r in records if "loss" in r)  # collapse statistics every step
    # the last value is the k-NN of the exported encoder of the final weights
    model = get_method(method).model_class.from_pretrained(final)
    online = OnlineKNN(str(labelled), "label", 32, get_method(method).feature_pool, max_images=9)
    assert online(model.get_export_backbone())["knn_top1"] == knn[5]


def test_dino_on_a_resnet_logs_the_knn_its_calibrated_floor_and_the_teacher_entropy(tmp_path, labelled):
    final = pretrain(get_method("dino"), tiny_dino_resnet_config(), _args(tmp_path, labelled, True, max_steps=2))
    records = _records(final.parent)
    assert sorted(r["step"] for r in records if "knn_top1" in r) == [0, 2]
    assert 0 <= records[0]["knn_floor"] <= 100  # the step-0 floor, its BatchNorm statistics calibrated
    assert all("teacher_entropy" in r for r in records if "loss" in r)


def test_resume_with_the_monitor_on_is_exact(tmp_path, labelled, monkeypatch):
    spec, config = get_method("byol"), tiny_byol_config()
    kwargs = dict(max_steps=6, save_steps=3)
    full = pretrain(spec, config, _args(tmp_path / "full", labelled, True, **kwargs))
    reset_accelerate()

    pretrain_killed_after(3, spec, config, _args(tmp_path / "resumed", labelled, True, **kwargs), monkeypatch)
    assert sorted(_losses(tmp_path / "resumed")) == [1, 2, 3]
    resumed = pretrain(
        spec, config, _args(tmp_path / "resumed", labelled, True, resume_from_checkpoint="latest", **kwargs)
    )
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")
    _assert_same_weights(full, resumed)
    knn_full = {r["step"]: r["knn_top1"] for r in _records(tmp_path / "full") if "knn_top1" in r}
    knn_resumed = {r["step"]: r["knn_top1"] for r in _records(tmp_path / "resumed") if "knn_top1" in r}
    assert sorted(knn_resumed) == [0, 2, 4, 6]  # no second step-0 evaluation after the resume
    assert knn_resumed == knn_full


# --------------------------------------------------------------------------------------------- OnlineKNN


def test_online_knn_leaves_modes_batchnorm_statistics_and_rng_unchanged(labelled):
    torch.manual_seed(0)
    encoder = BYOLForPreTraining(tiny_byol_config()).get_export_backbone().train()
    frozen = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][::2]
    for m in frozen:  # a mix of train- and eval-mode submodules
        m.eval()
    modes = [m.training for m in encoder.modules()]
    buffers = {k: v.clone() for k, v in encoder.state_dict().items()}
    draws = []
    encoder.register_forward_pre_hook(lambda *_: draws.append(torch.rand(1)))  # a stochastic encoder (drop path, ...)
    rng = torch.get_rng_state()
    result = OnlineKNN(str(labelled), "label", 32, max_images=6, batch_size=4)(encoder)
    assert len(draws) == 4  # 6 train + 6 test images in batches of 4: the hook did draw
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in encoder.modules()] == modes
    assert all(torch.equal(v, buffers[k]) for k, v in encoder.state_dict().items())  # BN running stats untouched
    assert 0 <= result["knn_top1"] <= 100


def test_preserved_state_sets_eval_inside():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    model[0].eval()
    with preserved_state(model):
        assert not any(m.training for m in model.modules())
        inside = torch.rand(3)
    assert [m.training for m in model.modules()] == [True, False, True]
    assert torch.equal(torch.rand(3), inside)  # the generator was rewound to where it stood before


def test_online_knn_bad_label_column_names_the_flag(labelled):
    with pytest.raises(ValueError, match=r"no column 'labels'.*--eval_label_column"):
        OnlineKNN(str(labelled), "labels", 32)


# ------------------------------------------------------------------------------------- collapse statistics


def _embedding_output(z):
    return SimpleNamespace(target_projections=z.unsqueeze(0))  # (K = 1, B, d)


def test_collapsed_embeddings_trip_the_alarm_after_warmup_only_once():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, generator=generator).expand(64, 16)  # every image has the same projection
    stats = collapse_statistics(_embedding_output(z), torch.nn.Identity())
    assert stats["embedding_std"] == pytest.approx(0.0, abs=1e-6)
    assert stats["embedding_std_ref"] == pytest.approx(1 / 4)
    logged = []
    alarms = CollapseAlarms(warmup_steps=3, log=logged.append)
    assert [alarms.check(step, stats) for step in (1, 2, 3)] == [[], [], []]  # warm-up: never
    tripped = alarms.check(4, stats)
    assert "embedding collapse" in tripped
    assert "uniform teacher" not in tripped
    assert alarms.check(5, stats) == []  # once only
    assert len(logged) == len(tripped)
    assert any("step 4 (embedding collapse)" in message for message in logged)


def test_spread_embeddings_give_std_one_over_sqrt_d_and_no_alarm():
    z = torch.randn(512, 64, generator=torch.Generator().manual_seed(0)) * 3.0  # scale is normalised away
    stats = collapse_statistics(_embedding_output(z), torch.nn.Identity())
    assert stats["embedding_std"] == pytest.approx(1 / math.sqrt(64), rel=0.2)
    assert stats["embedding_rank"] > 50
    assert CollapseAlarms(warmup_steps=0).check(1, stats) == []


def test_uniform_teacher_trips_and_sharp_teacher_does_not():
    torch.manual_seed(0)
    model = DINOForPreTraining(tiny_dino_config())  # centre 0, K = 64 prototypes
    K = model.config.out_dim
    flat = torch.randn(2, 8, 1).expand(2, 8, K)  # each image: the same logit for every prototype
    stats = collapse_statistics(SimpleNamespace(teacher_logits=flat), model)
    assert stats["teacher_entropy"] == pytest.approx(math.log(K), rel=1e-5)
    assert stats["teacher_entropy_max"] == pytest.approx(math.log(K))
    logged = []
    alarms = CollapseAlarms(warmup_steps=2, log=logged.append)
    assert alarms.check(2, stats) == []
    assert alarms.check(3, stats) == ["uniform teacher"]
    assert alarms.check(4, stats) == []
    assert len(logged) == 1

    sharp = torch.zeros(2, 8, K)
    sharp.scatter_(-1, torch.arange(16).view(2, 8, 1) % K, 10.0)  # a different prototype per image
    stats = collapse_statistics(SimpleNamespace(teacher_logits=sharp), model)
    assert stats["teacher_entropy"] < 0.1 * math.log(K)
    assert stats["teacher_batch_entropy"] > 0.5 * math.log(K)
    assert CollapseAlarms(warmup_steps=0).check(1, stats) == []


def test_one_prototype_teacher_trips():
    torch.manual_seed(0)
    model = DINOForPreTraining(tiny_dino_config())
    peaked = torch.zeros(2, 8, model.config.out_dim)
    peaked[..., 5] = 10.0  # every image on prototype 5
    stats = collapse_statistics(SimpleNamespace(teacher_logits=peaked), model)
    assert stats["teacher_batch_entropy"] < 0.1
    assert CollapseAlarms(warmup_steps=0).check(1, stats) == ["one-prototype teacher"]


def test_step_0_floor_calibrates_a_copy_and_leaves_the_encoder_alone(labelled):
    """`knn_floor` is the k-NN of a BatchNorm-calibrated copy; the encoder's own statistics stay 0 / 1."""
    encoder = BYOLForPreTraining(tiny_byol_config()).get_export_backbone()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    knn = OnlineKNN(str(labelled), "label", 32, max_images=12)
    out = knn(encoder, floor=True)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    twin = copy.deepcopy(encoder)
    calibrate_batchnorm(twin, knn.train_source, knn.view, max_images=2048)
    assert out["knn_floor"] == knn.top1(twin)
    assert out["knn_top1"] == knn.top1(encoder)


def test_training_curves_png(tmp_path):
    """A PNG of loss and online k-NN (step 0 drawn at the calibrated floor); None before the first step."""
    from ssl_hf.training.curves import plot_training_curves

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "knn_top1": 36.0, "knn_floor": 14.0}) + "\n")
    assert plot_training_curves(tmp_path) is None
    lines = [{"step": s, "loss": 1.0 / s, **({"knn_top1": 10.0 + s} if s % 2 == 0 else {})} for s in range(1, 7)]
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    path = plot_training_curves(tmp_path)
    assert path == tmp_path / "training_curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("align", "alarm"), [(1e-5, "identical branches"), (20.0, "alignment dominates")])
def test_asl_branch_alarms(align, alarm):
    stats = collapse_statistics(SimpleNamespace(loss_align=torch.tensor(align), loss_mae=torch.tensor(1.0)), None)
    assert stats["align_to_mae"] == pytest.approx(align)
    assert CollapseAlarms(warmup_steps=0, log=lambda message: None).check(1, stats) == [alarm]
    healthy = collapse_statistics(SimpleNamespace(loss_align=torch.tensor(0.01), loss_mae=torch.tensor(0.7)), None)
    assert CollapseAlarms(warmup_steps=0).check(1, healthy) == []
