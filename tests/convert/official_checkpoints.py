"""Test helpers: small checkpoints in the official layouts, and independent re-implementations of their forwards.

The forwards are written from the official architectures (read, not copied):
- timm-style ViT: facebookresearch/mae `models_mae.py`, facebookresearch/dino `vision_transformer.py`, bytedance/ibot
  `models/vision_transformer.py` (fused qkv, head-major, pre-norm blocks, exact GELU, LayerNorm eps 1e-6, final
  norm), sail-sg/TEC `models/models_vit.py` (`cls_token_mlp` input adapter), alinlab/SelfPatch
  `selfpatch_vision_transformer.py` (no cls token, no final norm; `SelfPatchHead.norm` over all tokens).
- torchvision ResNet: pytorch/vision `torchvision/models/resnet.py` (v1.5 bottleneck: stride in the 3x3 conv).
They use only `torch.nn.functional`, never ssl_hf or transformers.
"""

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor


EPS = 1e-6


def _randn(gen: torch.Generator, *shape: int, scale: float = 0.05) -> Tensor:
    return scale * torch.randn(*shape, generator=gen)


def timm_vit_state_dict(
    width: int = 192,
    depth: int = 2,
    patch: int = 4,
    image: int = 32,
    channels: int = 3,
    cls: bool = True,
    cls_row: bool = True,
    qkv_bias: bool = True,
    final_norm: bool = True,
    seed: int = 0,
) -> dict[str, Tensor]:
    """A random timm-style ViT state dict (MAE / DINO / iBOT / TEC / SelfPatch backbone layout)."""
    gen = torch.Generator().manual_seed(seed)
    grid = image // patch
    mlp = 4 * width
    sd = {
        "patch_embed.proj.weight": _randn(gen, width, channels, patch, patch, scale=0.1),
        "patch_embed.proj.bias": _randn(gen, width),
        "pos_embed": _randn(gen, 1, grid * grid + (cls and cls_row), width, scale=0.5),
    }
    if cls:
        sd["cls_token"] = _randn(gen, 1, 1, width, scale=0.5)
    for i in range(depth):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[f"{b}{norm}.weight"] = 1 + _randn(gen, width, scale=0.1)
            sd[f"{b}{norm}.bias"] = _randn(gen, width, scale=0.1)
        sd[f"{b}attn.qkv.weight"] = _randn(gen, 3 * width, width, scale=0.08)
        if qkv_bias:
            sd[f"{b}attn.qkv.bias"] = _randn(gen, 3 * width, scale=0.1)
        sd[f"{b}attn.proj.weight"] = _randn(gen, width, width)
        sd[f"{b}attn.proj.bias"] = _randn(gen, width)
        sd[f"{b}mlp.fc1.weight"] = _randn(gen, mlp, width, scale=0.08)
        sd[f"{b}mlp.fc1.bias"] = _randn(gen, mlp)
        sd[f"{b}mlp.fc2.weight"] = _randn(gen, width, mlp)
        sd[f"{b}mlp.fc2.bias"] = _randn(gen, width)
    if final_norm:
        sd["norm.weight"] = 1 + _randn(gen, width, scale=0.1)
        sd["norm.bias"] = _randn(gen, width, scale=0.1)
    return sd


def mae_decoder_keys(width: int = 192, grid: int = 8, seed: int = 1) -> dict[str, Tensor]:
    """A few tensors of MAE's decoder (`models_mae.py`), as in the `*_full.pth` releases."""
    gen = torch.Generator().manual_seed(seed)
    dec = 64
    return {
        "mask_token": _randn(gen, 1, 1, dec),
        "decoder_embed.weight": _randn(gen, dec, width),
        "decoder_embed.bias": _randn(gen, dec),
        "decoder_pos_embed": _randn(gen, 1, 1 + grid * grid, dec),
        "decoder_blocks.0.norm1.weight": torch.ones(dec),
        "decoder_blocks.0.attn.qkv.weight": _randn(gen, 3 * dec, dec),
        "decoder_norm.weight": torch.ones(dec),
        "decoder_pred.weight": _randn(gen, 48, dec),
    }


def dino_head_keys(width: int = 192, out_dim: int = 32, seed: int = 2) -> dict[str, Tensor]:
    """DINO's head (`mlp.0/2/4`, weight-normed `last_layer`), as in `main_dino.py`'s MultiCropWrapper."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "mlp.0.weight": _randn(gen, 64, width),
        "mlp.0.bias": _randn(gen, 64),
        "mlp.2.weight": _randn(gen, 64, 64),
        "mlp.2.bias": _randn(gen, 64),
        "mlp.4.weight": _randn(gen, 16, 64),
        "mlp.4.bias": _randn(gen, 16),
        "last_layer.weight_g": torch.ones(out_dim, 1),
        "last_layer.weight_v": _randn(gen, out_dim, 16),
    }


def dino_full_checkpoint(backbone: dict[str, Tensor], extra_teacher: dict[str, Tensor] | None = None) -> dict:
    """`main_dino.py`'s checkpoint: DDP student (`module.`), plain teacher, centre, epoch, args, optimiser state.

    The student's backbone differs from the teacher's, so a test can tell which one was converted.
    """
    head = dino_head_keys()
    student = {f"module.backbone.{k}": v + 0.5 for k, v in backbone.items()}
    student.update({f"module.head.{k}": v for k, v in head.items()})
    teacher = {f"backbone.{k}": v for k, v in backbone.items()}
    teacher.update({f"head.{k}": v for k, v in head.items()})
    teacher.update(extra_teacher or {})
    return {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "weight_decay": 0.04, "params": [0, 1]}]},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=4, out_dim=32, norm_last_layer=True),
        "dino_loss": {"center": torch.zeros(1, 32)},
    }


def timm_vit_forward(
    sd: dict[str, Tensor],
    pixel_values: Tensor,
    num_heads: int,
    prefix: str = "",
    final_norm: tuple[Tensor, Tensor] | None = None,
    apply_norm: bool = True,
) -> Tensor:
    """The official timm-style ViT forward: all tokens `(B, [1 +] N, D)` after the final norm (when `apply_norm`).

    `final_norm` overrides the state dict's `norm` (SelfPatch's `ca_head.norm`); TEC's `cls_token_mlp` is applied to
    the cls parameter when present, as `models_vit.py`'s `forward_features` does.
    """
    p = prefix
    weight = sd[f"{p}patch_embed.proj.weight"]
    width, patch = weight.shape[0], weight.shape[-1]
    x = F.conv2d(pixel_values, weight, sd.get(f"{p}patch_embed.proj.bias"), stride=patch).flatten(2).transpose(1, 2)
    batch, positions = x.shape[0], sd[f"{p}pos_embed"]
    if f"{p}cls_token" in sd:
        cls = sd[f"{p}cls_token"]
        if f"{p}cls_token_mlp.fc1.weight" in sd:
            hidden = F.gelu(F.linear(cls, sd[f"{p}cls_token_mlp.fc1.weight"], sd[f"{p}cls_token_mlp.fc1.bias"]))
            cls = F.linear(hidden, sd[f"{p}cls_token_mlp.fc2.weight"], sd[f"{p}cls_token_mlp.fc2.bias"])
        if positions.shape[1] == x.shape[1]:  # no cls row (timm's no_embed_class): the cls token gets no position
            x = torch.cat([cls.expand(batch, -1, -1), x + positions], dim=1)
        else:
            x = torch.cat([cls.expand(batch, -1, -1), x], dim=1) + positions
    else:
        x = x + positions
    depth = 1 + max(int(k[len(p) + 7 :].split(".")[0]) for k in sd if k.startswith(f"{p}blocks."))
    for i in range(depth):
        x = timm_block(sd, f"{p}blocks.{i}.", x, num_heads)
    if not apply_norm:
        return x
    norm = final_norm or (sd[f"{p}norm.weight"], sd[f"{p}norm.bias"])
    return F.layer_norm(x, (width,), *norm, EPS)


def timm_block(sd: dict[str, Tensor], b: str, x: Tensor, num_heads: int) -> Tensor:
    """One pre-norm timm block (keys under `b`): fused qkv split head-major, exact GELU, LayerNorm eps 1e-6."""
    batch, tokens, width = x.shape
    head_dim = width // num_heads
    h = F.layer_norm(x, (width,), sd[f"{b}norm1.weight"], sd[f"{b}norm1.bias"], EPS)
    qkv = F.linear(h, sd[f"{b}attn.qkv.weight"], sd.get(f"{b}attn.qkv.bias"))
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    attention = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(dim=-1)
    h = (attention @ v).transpose(1, 2).reshape(batch, tokens, width)
    x = x + F.linear(h, sd[f"{b}attn.proj.weight"], sd[f"{b}attn.proj.bias"])
    h = F.layer_norm(x, (width,), sd[f"{b}norm2.weight"], sd[f"{b}norm2.bias"], EPS)
    h = F.linear(F.gelu(F.linear(h, sd[f"{b}mlp.fc1.weight"], sd[f"{b}mlp.fc1.bias"])), *_fc2(sd, b))
    return x + h


def _fc2(sd: dict[str, Tensor], block: str) -> tuple[Tensor, Tensor]:
    return sd[f"{block}mlp.fc2.weight"], sd[f"{block}mlp.fc2.bias"]


def torchvision_resnet_state_dict(bottleneck: bool, seed: int = 0, classifier: bool = True) -> dict[str, Tensor]:
    """A random torchvision ResNet: basic blocks (widths 8-16-32-64, depths 2-1-1-1) or bottlenecks (16-32-64-128,
    depths 1-2-1-1, inner width / 4), 7x7 stem of width 8, running statistics included."""
    gen = torch.Generator().manual_seed(seed)
    widths, depths = ([16, 32, 64, 128], [1, 2, 1, 1]) if bottleneck else ([8, 16, 32, 64], [2, 1, 1, 1])
    stem = 8
    sd: dict[str, Tensor] = {"conv1.weight": _randn(gen, stem, 3, 7, 7, scale=0.1)}
    _bn(sd, "bn1", stem, gen)
    in_ch = stem
    for s, (width, depth) in enumerate(zip(widths, depths)):
        for b in range(depth):
            block = f"layer{s + 1}.{b}."
            stride = 2 if s > 0 and b == 0 else 1
            if bottleneck:
                inner = width // 4
                shapes = [(inner, in_ch, 1), (inner, inner, 3), (width, inner, 1)]
            else:
                shapes = [(width, in_ch, 3), (width, width, 3)]
            for j, (out_ch, ch, k) in enumerate(shapes, start=1):
                sd[f"{block}conv{j}.weight"] = _randn(gen, out_ch, ch, k, k, scale=(2 / (ch * k * k)) ** 0.5)
                _bn(sd, f"{block}bn{j}", out_ch, gen)
            if stride != 1 or in_ch != width:
                sd[f"{block}downsample.0.weight"] = _randn(gen, width, in_ch, 1, 1, scale=(1 / in_ch) ** 0.5)
                _bn(sd, f"{block}downsample.1", width, gen)
            in_ch = width
    if classifier:
        sd["fc.weight"] = _randn(gen, 10, in_ch)
        sd["fc.bias"] = _randn(gen, 10)
    return sd


def _bn(sd: dict, name: str, ch: int, gen: torch.Generator) -> None:
    sd[f"{name}.weight"] = 1 + _randn(gen, ch, scale=0.1)
    sd[f"{name}.bias"] = _randn(gen, ch, scale=0.1)
    sd[f"{name}.running_mean"] = _randn(gen, ch, scale=0.1)
    sd[f"{name}.running_var"] = 0.5 + torch.rand(ch, generator=gen)
    sd[f"{name}.num_batches_tracked"] = torch.tensor(100)


def torchvision_resnet_forward(sd: dict[str, Tensor], pixel_values: Tensor, prefix: str = "") -> Tensor:
    """torchvision's ResNet forward up to the global average pool: `(B, C)` (no `fc`)."""
    p = prefix

    def bn(x: Tensor, name: str) -> Tensor:
        n = f"{p}{name}"
        return F.batch_norm(
            x, sd[f"{n}.running_mean"], sd[f"{n}.running_var"], sd[f"{n}.weight"], sd[f"{n}.bias"], False, 0.0, 1e-5
        )

    x = F.relu(bn(F.conv2d(pixel_values, sd[f"{p}conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    bottleneck = f"{p}layer1.0.conv3.weight" in sd
    stage = 1
    while f"{p}layer{stage}.0.conv1.weight" in sd:
        block = 0
        while f"{p}layer{stage}.{block}.conv1.weight" in sd:
            name = f"layer{stage}.{block}."
            stride = 2 if stage > 1 and block == 0 else 1
            w = [sd.get(f"{p}{name}conv{j}.weight") for j in (1, 2, 3)]
            if bottleneck:
                out = F.relu(bn(F.conv2d(x, w[0]), f"{name}bn1"))
                out = F.relu(bn(F.conv2d(out, w[1], stride=stride, padding=1), f"{name}bn2"))
                out = bn(F.conv2d(out, w[2]), f"{name}bn3")
            else:
                out = F.relu(bn(F.conv2d(x, w[0], stride=stride, padding=1), f"{name}bn1"))
                out = bn(F.conv2d(out, w[1], padding=1), f"{name}bn2")
            identity = x
            if f"{p}{name}downsample.0.weight" in sd:
                identity = bn(F.conv2d(x, sd[f"{p}{name}downsample.0.weight"], stride=stride), f"{name}downsample.1")
            x = F.relu(out + identity)
            block += 1
        stage += 1
    return x.mean(dim=(2, 3))


def mae_full_state_dict(
    width: int = 192, depth: int = 2, patch: int = 4, image: int = 32, dec: int = 64, dec_depth: int = 2, seed: int = 0
) -> dict[str, Tensor]:
    """A random MAE `*_full.pth` state dict: the encoder plus the complete decoder of `models_mae.py`."""
    sd = timm_vit_state_dict(width=width, depth=depth, patch=patch, image=image, seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    rows = (image // patch) ** 2 + 1
    sd["mask_token"] = _randn(gen, 1, 1, dec, scale=0.5)
    sd["decoder_embed.weight"], sd["decoder_embed.bias"] = _randn(gen, dec, width, scale=0.1), _randn(gen, dec)
    sd["decoder_pos_embed"] = _randn(gen, 1, rows, dec, scale=0.5)
    block = timm_vit_state_dict(width=dec, depth=dec_depth, patch=patch, image=image, seed=seed + 1)
    sd.update({f"decoder_{k}": v for k, v in block.items() if k.startswith("blocks.")})
    sd["decoder_norm.weight"], sd["decoder_norm.bias"] = 1 + _randn(gen, dec, scale=0.1), _randn(gen, dec, scale=0.1)
    sd["decoder_pred.weight"] = _randn(gen, patch * patch * 3, dec, scale=0.1)
    sd["decoder_pred.bias"] = _randn(gen, patch * patch * 3)
    return sd


def mae_reference_loss(
    sd: dict[str, Tensor], imgs: Tensor, noise: Tensor, mask_ratio: float, heads: int, dec_heads: int
) -> tuple[Tensor, Tensor, Tensor]:
    """`models_mae.py`'s forward (norm-pix loss): masking by argsort of `noise`, encoder on the visible patches,
    decoder with mask tokens un-shuffled by `ids_restore`; returns (loss, pred `(B, L, p*p*3)`, mask `(B, L)`)."""
    weight = sd["patch_embed.proj.weight"]
    width, patch = weight.shape[0], weight.shape[-1]
    x = F.conv2d(imgs, weight, sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    x = x + sd["pos_embed"][:, 1:]
    batch, length = x.shape[:2]
    keep = int(length * (1 - mask_ratio))
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, width))
    mask = torch.ones(batch, length)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    cls = sd["cls_token"] + sd["pos_embed"][:, :1]
    x = torch.cat([cls.expand(batch, -1, -1), x], dim=1)
    for i in range(1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))):
        x = timm_block(sd, f"blocks.{i}.", x, heads)
    x = F.layer_norm(x, (width,), sd["norm.weight"], sd["norm.bias"], EPS)
    x = F.linear(x, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    dec = x.shape[-1]
    tokens = torch.cat([x[:, 1:], sd["mask_token"].expand(batch, length + 1 - x.shape[1], -1)], dim=1)
    tokens = torch.gather(tokens, 1, ids_restore[:, :, None].expand(-1, -1, dec))
    x = torch.cat([x[:, :1], tokens], dim=1) + sd["decoder_pos_embed"]
    for i in range(1 + max(int(k.split(".")[1]) for k in sd if k.startswith("decoder_blocks."))):
        x = timm_block(sd, f"decoder_blocks.{i}.", x, dec_heads)
    x = F.layer_norm(x, (dec,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], EPS)
    pred = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:]
    h = imgs.shape[2] // patch
    target = imgs.reshape(batch, 3, h, patch, h, patch).permute(0, 2, 4, 3, 5, 1).reshape(batch, h * h, -1)
    target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
    loss = (((pred - target) ** 2).mean(dim=-1) * mask).sum() / mask.sum()
    return loss, pred, mask


def dino_head_forward(sd: dict[str, Tensor], prefix: str, features: Tensor) -> Tensor:
    """`vision_transformer.py`'s `DINOHead` without BatchNorm: Linear-GELU MLP, L2 normalisation, then the weight-norm
    last layer `g * v / ||v||` (row-wise norm of `weight_v`)."""
    x, i = features, 0
    while f"{prefix}mlp.{i}.weight" in sd:
        x = F.linear(x, sd[f"{prefix}mlp.{i}.weight"], sd[f"{prefix}mlp.{i}.bias"])
        if f"{prefix}mlp.{i + 2}.weight" in sd:
            x = F.gelu(x)
        i += 2
    x = F.normalize(x, dim=-1, p=2)
    v, g = sd[f"{prefix}last_layer.weight_v"], sd[f"{prefix}last_layer.weight_g"]
    return F.linear(x, g * v / v.norm(dim=1, keepdim=True))


def selfpatch_ca_head_keys(width: int = 192, seed: int = 8) -> dict[str, Tensor]:
    """SelfPatch's `SelfPatchHead` (`ca_head.`): query token, 2 class-attention blocks (qkv biases, MLP x4), `norm`."""
    gen = torch.Generator().manual_seed(seed)
    sd = {"ca_head.cls_token": _randn(gen, 1, 1, width, scale=0.5)}
    for i in range(2):
        b = f"ca_head.cls_blocks.{i}."
        for name, (rows, cols) in {
            "attn.q": (width, width),
            "attn.k": (width, width),
            "attn.v": (width, width),
            "attn.proj": (width, width),
            "mlp.fc1": (4 * width, width),
            "mlp.fc2": (width, 4 * width),
        }.items():
            sd[f"{b}{name}.weight"], sd[f"{b}{name}.bias"] = _randn(gen, rows, cols, scale=0.08), _randn(gen, rows)
        for norm in ("norm1", "norm2"):
            sd[f"{b}{norm}.weight"], sd[f"{b}{norm}.bias"] = 1 + _randn(gen, width), _randn(gen, width)
    sd["ca_head.norm.weight"], sd["ca_head.norm.bias"] = 1 + _randn(gen, width), _randn(gen, width)
    return sd


def selfpatch_image_token(sd: dict[str, Tensor], tokens: Tensor, num_heads: int) -> Tensor:
    """`SelfPatchHead` on all patch tokens: CaiT class attention (the query token is the only query, keys and values
    are `[query; tokens]`), then `norm`; returns the normalised image token `(B, D)`."""
    batch, _, width = tokens.shape
    head_dim = width // num_heads
    cls = sd["ca_head.cls_token"].expand(batch, -1, -1)
    for i in range(2):
        b = f"ca_head.cls_blocks.{i}."
        u = F.layer_norm(torch.cat([cls, tokens], dim=1), (width,), sd[f"{b}norm1.weight"], sd[f"{b}norm1.bias"], EPS)
        q = F.linear(u[:, :1], sd[f"{b}attn.q.weight"], sd[f"{b}attn.q.bias"]).reshape(batch, 1, num_heads, head_dim)
        k = F.linear(u, sd[f"{b}attn.k.weight"], sd[f"{b}attn.k.bias"]).reshape(batch, -1, num_heads, head_dim)
        v = F.linear(u, sd[f"{b}attn.v.weight"], sd[f"{b}attn.v.bias"]).reshape(batch, -1, num_heads, head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attention = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        cls = cls + F.linear((attention @ v).transpose(1, 2).reshape(batch, 1, width), *_linear(sd, f"{b}attn.proj"))
        h = F.layer_norm(cls, (width,), sd[f"{b}norm2.weight"], sd[f"{b}norm2.bias"], EPS)
        cls = cls + F.linear(F.gelu(F.linear(h, *_linear(sd, f"{b}mlp.fc1"))), *_linear(sd, f"{b}mlp.fc2"))
    return F.layer_norm(cls[:, 0], (width,), sd["ca_head.norm.weight"], sd["ca_head.norm.bias"], EPS)


def _linear(sd: dict[str, Tensor], name: str) -> tuple[Tensor, Tensor]:
    return sd[f"{name}.weight"], sd[f"{name}.bias"]


def selfpatch_full_checkpoint() -> dict:
    """`main_selfpatch.py`'s checkpoint: student (DDP) and teacher `MultiCropWrapper(backbone, ca_head, c_head,
    p_head)` with different weights, `dino_loss` with `center (1, 1, 32)` and `patch_center (1, 24)`, `args`."""

    def network(seed: int) -> dict[str, Tensor]:
        sd = {f"backbone.{k}": v for k, v in timm_vit_state_dict(cls=False, final_norm=False, seed=seed).items()}
        sd.update(selfpatch_ca_head_keys(seed=seed + 1))
        sd.update({f"c_head.{k}": v for k, v in dino_head_keys(seed=seed + 2).items()})
        sd.update({f"p_head.{k}": v for k, v in dino_head_keys(out_dim=24, seed=seed + 3).items()})
        return sd

    gen = torch.Generator().manual_seed(30)
    return {
        "student": {f"module.{k}": v for k, v in network(10).items()},
        "teacher": network(20),
        "dino_loss": {
            "center": torch.randn(1, 1, 32, generator=gen),
            "patch_center": torch.randn(1, 24, generator=gen),
        },
        "epoch": 1,
        "args": argparse.Namespace(k_num=2, norm_last_layer=True, out_dim=32, out_dim_selfpatch=24),
    }


def byol_head_keys(in_dim: int, hidden: int = 24, out: int = 8, seed: int = 40) -> dict[str, Tensor]:
    """A BYOL projector / predictor (`Linear (0) -> BatchNorm1d (1) -> ReLU -> Linear (3)`, solo-learn and lightly)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {"0.weight": _randn(gen, hidden, in_dim, scale=0.2), "0.bias": _randn(gen, hidden)}
    _bn(sd, "1", hidden, gen)
    sd["3.weight"], sd["3.bias"] = _randn(gen, out, hidden, scale=0.2), _randn(gen, out)
    return sd


def byol_head_forward(sd: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    """The head in eval mode (BatchNorm with its running statistics, eps 1e-5)."""
    p = prefix
    h = F.linear(x, sd[f"{p}0.weight"], sd[f"{p}0.bias"])
    h = F.batch_norm(h, sd[f"{p}1.running_mean"], sd[f"{p}1.running_var"], sd[f"{p}1.weight"], sd[f"{p}1.bias"])
    return F.linear(F.relu(h), sd[f"{p}3.weight"], sd[f"{p}3.bias"])


BYOL_NAMES = {
    # format: online backbone, target backbone, projector, target projector, predictor, a dropped online classifier
    "solo-learn": (
        "backbone.",
        "momentum_backbone.",
        "projector.",
        "momentum_projector.",
        "predictor.",
        "classifier.",
    ),
    "lightly": (
        "backbone.",
        "teacher_backbone.",
        "projection_head.layers.",
        "teacher_projection_head.layers.",
        "prediction_head.layers.",
        "online_classifier.",
    ),
}


def byol_state_dict(source_format: str = "solo-learn") -> dict[str, Tensor]:
    """A BYOL `state_dict` of solo-learn (`backbone`, `momentum_backbone`, `projector`, `momentum_projector`,
    `predictor`, `classifier`) or lightly (`backbone`, `teacher_backbone`, `projection_head.layers`, ...): torchvision
    ResNets without `fc`, Linear-BN-ReLU-Linear heads; online and target networks differ."""
    online, target, projector, target_projector, predictor, classifier = BYOL_NAMES[source_format]
    sd: dict[str, Tensor] = {}
    for prefix, seed in ((online, 0), (target, 1)):
        sd.update({prefix + k: v for k, v in torchvision_resnet_state_dict(True, seed=seed, classifier=False).items()})
    for prefix, in_dim, seed in ((projector, 128, 42), (target_projector, 128, 43), (predictor, 8, 44)):
        sd.update({prefix + k: v for k, v in byol_head_keys(in_dim, seed=seed).items()})
    sd[f"{classifier}weight"], sd[f"{classifier}bias"] = torch.zeros(10, 128), torch.zeros(10)
    return sd
