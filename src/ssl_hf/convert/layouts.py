"""Official checkpoint files: reading them safely, unwrapping their containers and finding the encoder's keys.

The layouts were read from the projects' own code (nothing is copied):

- MAE, facebookresearch/mae `models_mae.py` (encoder + `decoder_*`), `main_pretrain.py` / `util/misc.py`
  (`{'model': sd, 'optimizer', 'epoch', 'args'}`); the released `mae_pretrain_vit_*.pth` hold `{'model': sd}`.
- DINO, facebookresearch/dino `vision_transformer.py` (timm-style ViT), `main_dino.py` (`MultiCropWrapper` with
  `backbone` and `head`; full checkpoints `{'student' (DDP: 'module.'), 'teacher', 'dino_loss', 'epoch', 'args',
  'optimizer', ...}`); the `*_pretrain.pth` backbones are raw state dicts.
- iBOT, bytedance/ibot `models/vision_transformer.py` and
  `evaluation/classification_layer_decay/extract_backbone_weights.py` (`checkpoint_teacher.pth` = `{'state_dict': sd}`).
- TEC, sail-sg/TEC `models/models_vit.py` and `weight_convert.py`: the released files are flat encoder dicts whose cls
  token already went through the input adapter and whose final `norm` was dropped (`global_pool=True` deletes it);
  pre-training checkpoints (`models/models_tec_vit.py`) keep `cls_token_mlp.*` and `norm`.
- SelfPatch, alinlab/SelfPatch `selfpatch_vision_transformer.py` (ViT without cls token and without final norm; the
  `SelfPatchHead` ends with the `norm` of all tokens) and `main_selfpatch.py` (`MultiCropWrapper` with `backbone`,
  `ca_head`, `c_head`, `p_head`; checkpoints like DINO's).
- solo-learn, vturrisi/solo-learn `solo/methods/base.py` (Lightning `.ckpt`, `state_dict` with `backbone.*` =
  torchvision ResNet without `fc`, `momentum_backbone.*`, `projector.*`, `predictor.*`, `classifier.*`).
- lightly, lightly-ai/lightly `benchmarks/imagenet/resnet50/byol.py` (`backbone.*` = torchvision ResNet,
  `teacher_backbone.*`, heads) and `examples/pytorch_lightning/byol.py` (`backbone` =
  `nn.Sequential(*resnet.children()[:-1])`, keys `backbone.0.weight`, `backbone.4.0.conv1.weight`, ...).
"""

import argparse
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the problem and what to do about it."""


VIT, CLS_FREE_VIT, RESNET = "vit", "cls-free vit", "resnet"
_ARCH_NAMES = {VIT: "timm-style ViT", CLS_FREE_VIT: "timm-style ViT without cls token", RESNET: "torchvision ResNet"}

# Heads of the standard ViT widths: ViT-Ti/S/B/L/H (DeiT, ViT and MAE papers).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

# Top-level entries that hold the state dict, in the order they are tried. Full DINO/iBOT/SelfPatch checkpoints hold
# both networks: the teacher is the one their papers evaluate.
CONTAINER_KEYS = ("teacher", "state_dict", "model")

# Key prefixes (relative to the encoder's) of parts that are not the encoder and are dropped when found next to it.
_NOT_ENCODER = {
    VIT: (
        "head.",  # timm classifier or DINO head (Identity in the backbone files)
        "decoder_",  # MAE decoder (`*_full.pth`), TEC decoder blocks and table
        "mask_token",  # MAE decoder mask token
        "masked_embed",  # iBOT student mask embedding
        "encoder_adaptor.",  # TEC pre-training encoder adapter
        "forward_fea_decoder.",  # TEC feature decoder
        "forward_att_decoder.",  # TEC attention decoder
    ),
    RESNET: ("fc.",),  # torchvision classifier
}
_NOT_ENCODER[CLS_FREE_VIT] = _NOT_ENCODER[VIT]

# lightly's examples keep `nn.Sequential(*resnet.children()[:-1])`: child index -> torchvision name.
_SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


@dataclass(frozen=True)
class SourceFormat:
    """How one project lays out its released checkpoints, and what the model card says about them.

    Attributes:
        name: The `--from` value.
        title: Project name in messages and in the card (`MAE`, `DINO`, ...).
        repo: GitHub repository whose code the layout was read from.
        files: Examples of released file names (documentation and messages).
        architectures: Encoder layouts the format may hold (`vit`, `cls-free vit`, `resnet`).
        prefixes: Encoder key prefixes tried in order, matched at the start of keys only (`""` = top level).
        card_method: ssl_hf method whose model-card text (summary, tags) applies, or None.
        paper: Short citation of the paper (or of the architecture for the generic formats).
        paper_url: Link to the paper.
        bibtex: BibTeX entry of the paper.
        license: Hub license id of the released weights, or `other` when it is not stated with them.
        summary: One-line description of the method, when no ssl_hf model card (`card_method`) describes it.
    """

    name: str
    title: str
    repo: str
    files: str
    architectures: tuple[str, ...]
    paper: str
    paper_url: str
    bibtex: str
    prefixes: tuple[str, ...] = ("", "backbone.")
    card_method: str | None = None
    license: str = "other"
    summary: str = ""


_MAE_BIB = """@inproceedings{he2022masked,
  title     = {Masked Autoencoders Are Scalable Vision Learners},
  author    = {He, Kaiming and Chen, Xinlei and Xie, Saining and Li, Yanghao and Doll{\\'a}r, Piotr and Girshick, Ross},
  booktitle = {CVPR},
  year      = {2022}
}"""
_DINO_BIB = """@inproceedings{caron2021emerging,
  title     = {Emerging Properties in Self-Supervised Vision Transformers},
  author    = {Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J{\\'e}gou, Herv{\\'e} and Mairal, Julien and
               Bojanowski, Piotr and Joulin, Armand},
  booktitle = {ICCV},
  year      = {2021}
}"""
_IBOT_BIB = """@inproceedings{zhou2022ibot,
  title     = {iBOT: Image BERT Pre-Training with Online Tokenizer},
  author    = {Zhou, Jinghao and Wei, Chen and Wang, Huiyu and Shen, Wei and Xie, Cihang and Yuille, Alan and Kong, Tao},
  booktitle = {ICLR},
  year      = {2022}
}"""
_TEC_BIB = """@article{gao2022tec,
  title   = {Towards Sustainable Self-supervised Learning},
  author  = {Gao, Shanghua and Zhou, Pan and Cheng, Ming-Ming and Yan, Shuicheng},
  journal = {arXiv preprint arXiv:2210.11016},
  year    = {2022}
}"""
_SELFPATCH_BIB = """@inproceedings{yun2022patch,
  title     = {Patch-level Representation Learning for Self-supervised Vision Transformers},
  author    = {Yun, Sukmin and Lee, Hankook and Kim, Jaehyung and Shin, Jinwoo},
  booktitle = {CVPR},
  year      = {2022}
}"""
_BYOL_BIB = """@inproceedings{grill2020bootstrap,
  title     = {Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning},
  author    = {Grill, Jean-Bastien and Strub, Florian and Altch{\\'e}, Florent and Tallec, Corentin and Richemond,
               Pierre H. and Buchatskaya, Elena and Doersch, Carl and Pires, Bernardo Avila and Guo, Zhaohan Daniel and
               Azar, Mohammad Gheshlaghi and Piot, Bilal and Kavukcuoglu, Koray and Munos, R{\\'e}mi and Valko, Michal},
  booktitle = {NeurIPS},
  year      = {2020}
}"""
_VIT_BIB = """@inproceedings{dosovitskiy2021image,
  title     = {An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale},
  author    = {Dosovitskiy, Alexey and Beyer, Lucas and Kolesnikov, Alexander and Weissenborn, Dirk and Zhai, Xiaohua and
               Unterthiner, Thomas and Dehghani, Mostafa and Minderer, Matthias and Heigold, Georg and Gelly, Sylvain and
               Uszkoreit, Jakob and Houlsby, Neil},
  booktitle = {ICLR},
  year      = {2021}
}"""
_RESNET_BIB = """@inproceedings{he2016deep,
  title     = {Deep Residual Learning for Image Recognition},
  author    = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  booktitle = {CVPR},
  year      = {2016}
}"""

FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in (
        SourceFormat(
            "mae",
            "MAE",
            "facebookresearch/mae",
            "mae_pretrain_vit_{base,large,huge}.pth, mae_visualize_vit_*.pth, *_full.pth",
            (VIT,),
            'He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022',
            "https://arxiv.org/abs/2111.06377",
            _MAE_BIB,
            card_method="mae",
            license="cc-by-nc-4.0",  # facebookresearch/mae README: "This project is under the CC-BY-NC 4.0 license"
        ),
        SourceFormat(
            "dino",
            "DINO",
            "facebookresearch/dino",
            "dino_{deitsmall,vitbase}{16,8}_pretrain.pth, dino_resnet50_pretrain.pth, *_full_checkpoint.pth",
            (VIT, RESNET),
            'Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021',
            "https://arxiv.org/abs/2104.14294",
            _DINO_BIB,
            card_method="dino",
            license="apache-2.0",  # facebookresearch/dino: Apache License 2.0 (LICENSE and file headers)
        ),
        SourceFormat(
            "ibot",
            "iBOT",
            "bytedance/ibot",
            "checkpoint_teacher.pth (backbone), checkpoint.pth (full)",
            (VIT,),
            'Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022',
            "https://arxiv.org/abs/2111.07832",
            _IBOT_BIB,
            license="apache-2.0",  # bytedance/ibot: Apache License 2.0
            summary="self-distillation as DINO on the cls token plus masked image modeling: the student predicts the "
            "teacher's patch tokens (an online tokenizer) for masked patches.",
        ),
        SourceFormat(
            "tec",
            "TEC",
            "sail-sg/TEC",
            "tec_mae_vitb_{300,800}ep.pth, tec_ibot_vitb_{300,800}ep.pth, tec_mae_vitl_300ep.pth, ...",
            (VIT,),
            'Gao et al., "Towards Sustainable Self-supervised Learning", arXiv 2210.11016',
            "https://arxiv.org/abs/2210.11016",
            _TEC_BIB,
            card_method="tec",
        ),
        SourceFormat(
            "selfpatch",
            "SelfPatch",
            "alinlab/SelfPatch",
            "checkpoint.pth (DINO-style, teacher with backbone / ca_head / c_head / p_head), backbone state dicts",
            (CLS_FREE_VIT,),
            'Yun et al., "Patch-level Representation Learning for Self-supervised Vision Transformers", CVPR 2022',
            "https://arxiv.org/abs/2206.07990",
            _SELFPATCH_BIB,
            card_method="selfpatch",
        ),
        SourceFormat(
            "timm-vit",
            "timm-style ViT",
            "huggingface/pytorch-image-models",
            "any timm-layout ViT state dict (raw, {'model': sd} or {'state_dict': sd})",
            (VIT,),
            'Dosovitskiy et al., "An Image is Worth 16x16 Words" (the architecture), ICLR 2021',
            "https://arxiv.org/abs/2010.11929",
            _VIT_BIB,
            summary="a timm-layout ViT; the method that trained these weights is not recorded in the file.",
        ),
        SourceFormat(
            "torchvision-resnet",
            "torchvision ResNet",
            "pytorch/vision",
            "any torchvision-layout ResNet state dict (e.g. BYOL weights converted from DeepMind's release)",
            (RESNET,),
            'He et al., "Deep Residual Learning for Image Recognition" (the architecture), CVPR 2016',
            "https://arxiv.org/abs/1512.03385",
            _RESNET_BIB,
            summary="a torchvision-layout ResNet; the method that trained these weights is not recorded in the file.",
        ),
        SourceFormat(
            "solo-learn",
            "solo-learn ResNet (e.g. BYOL)",
            "vturrisi/solo-learn",
            "Lightning .ckpt of a ResNet method (e.g. BYOL: backbone, momentum_backbone, projector, predictor)",
            (RESNET,),
            'Grill et al., "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020',
            "https://arxiv.org/abs/2006.07733",
            _BYOL_BIB,
            prefixes=("backbone.", ""),
            summary="the online encoder (`backbone.*`) of a solo-learn run such as BYOL; the method is the one of the run "
            "that saved the checkpoint (BYOL is the paper these checkpoints are converted for).",
            license="mit",  # vturrisi/solo-learn: MIT license
        ),
        SourceFormat(
            "lightly",
            "lightly ResNet (e.g. BYOL)",
            "lightly-ai/lightly",
            "Lightning .ckpt or state dict of a ResNet model (e.g. BYOL: backbone, projection/prediction heads)",
            (RESNET,),
            'Grill et al., "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020',
            "https://arxiv.org/abs/2006.07733",
            _BYOL_BIB,
            prefixes=("backbone.", ""),
            summary="the online encoder (`backbone.*`) of a lightly model such as BYOL; the method is the one of the run that "
            "saved the checkpoint (BYOL is the paper these checkpoints are converted for).",
            license="mit",  # lightly-ai/lightly: MIT license
        ),
    )
}


@dataclass
class EncoderLayout:
    """Where the encoder sits in an unwrapped state dict.

    Attributes:
        architecture: `vit`, `cls-free vit` or `resnet`.
        prefix: Key prefix of the encoder (`""` = top level), matched at the start of keys.
        dropped: Parts of the file that are not the encoder: top-level name -> number of tensors.
    """

    architecture: str
    prefix: str
    dropped: dict[str, int] = field(default_factory=dict)


def load_checkpoint_file(path: str | Path) -> object:
    """Reads a PyTorch checkpoint with `torch.load(weights_only=True)` on the CPU.

    `argparse.Namespace` (the `args` entry of MAE, DINO, iBOT and SelfPatch training checkpoints) is the one class
    allowed beyond tensors and containers: it only holds the training options. Anything else a file needs (e.g.
    omegaconf configs in Lightning checkpoints) is refused with an explanation, because unpickling it could run code.

    Args:
        path: A `.pth` / `.pt` / `.ckpt` file.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        FileNotFoundError: No such file.
        ConversionError: The file is truncated, not a PyTorch checkpoint, or needs classes that are not allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _unreadable(path, err) from err
        message = str(err)
        needed = (
            message.split("Unsupported global:")[-1].strip().splitlines()[0] if "Unsupported global" in message else ""
        )
        raise ConversionError(
            f"{path.name} holds Python objects beyond tensors{f' ({needed})' if needed else ''}, which "
            "torch.load(weights_only=True) refuses to unpickle because unpickling them could run code. If you trust "
            "the file, re-save only its state dict, e.g. `python -c \"import torch; c = torch.load('IN', "
            "weights_only=False); torch.save(c['state_dict'], 'OUT.pth')\"` (use the key that holds the weights: "
            "state_dict, model or teacher), and convert OUT.pth."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> ConversionError:
    size = path.stat().st_size
    return ConversionError(
        f"Cannot read {path} ({size:,} bytes) as a PyTorch checkpoint: {type(err).__name__}: "
        f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no details'}. The file is probably truncated "
        "(an interrupted download: compare its size or checksum with the release) or not a torch.save file."
    )


def unwrap_state_dict(
    checkpoint: object, key: str | None = None, source: str = "the checkpoint"
) -> tuple[dict[str, Tensor], str]:
    """The state dict inside a loaded checkpoint, with DDP's `module.` removed from the start of keys.

    Args:
        checkpoint: What `load_checkpoint_file` returned.
        key: The entry holding the weights (`model`, `state_dict`, `teacher`, `student`, ...); by default a flat
            dict of tensors is taken as is, else the first of `CONTAINER_KEYS` present.
        source: Name of the file, for messages.

    Returns:
        `{name: tensor}` and where it was found (`the top level` or `'<key>'`).
    """
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{source} holds a {type(checkpoint).__name__}, not a dict of weights.")
    if key is not None:
        if key not in checkpoint:
            raise ConversionError(f"{source} has no entry '{key}'; it has: {', '.join(map(str, checkpoint))}.")
        state, container = checkpoint[key], f"'{key}'"
    elif checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        state, container = checkpoint, "the top level"
    else:
        found = [k for k in CONTAINER_KEYS if isinstance(checkpoint.get(k), dict)]
        if not found:
            entries = ", ".join(f"{k} ({type(v).__name__})" for k, v in list(checkpoint.items())[:8])
            raise ConversionError(
                f"{source} is neither a state dict nor a container of one (looked for the entries "
                f"{', '.join(CONTAINER_KEYS)}); it holds: {entries}."
            )
        state, container = checkpoint[found[0]], f"'{found[0]}'"
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConversionError(f"The weights entry of {source} is not a flat dict of tensors.")
    unwrapped = {k.removeprefix("module."): v for k, v in state.items()}
    if len(unwrapped) != len(state):
        raise ConversionError(f"{source} holds keys both with and without the `module.` prefix of DDP.")
    return unwrapped, container


def load_official_state_dict(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Reads a released checkpoint and returns its state dict (public API, stable).

    Handles the containers of the supported projects: raw state dicts (DINO backbones, TEC, torchvision), `{'model':
    sd}` (MAE, TEC pre-training), `{'state_dict': sd}` (iBOT teacher, Lightning `.ckpt` of solo-learn and lightly) and
    full DINO-style checkpoints (`teacher` is taken unless `key` says otherwise). A leading `module.` (DDP) is removed
    from keys; nothing else is renamed. Loading uses `torch.load(weights_only=True)` only (see `load_checkpoint_file`).

    Args:
        path: The checkpoint file.
        key: Entry to read instead of the default (e.g. `student` of a DINO full checkpoint).

    Returns:
        `{name: tensor}` on the CPU.

    Raises:
        FileNotFoundError: No such file.
        ConversionError: Unreadable, truncated or unsafe file, or no state dict in it.
    """
    path = Path(path)
    return unwrap_state_dict(load_checkpoint_file(path), key, path.name)[0]


def find_encoder(state: dict[str, Tensor], fmt: SourceFormat) -> EncoderLayout | None:
    """The first (prefix, architecture) of `fmt` whose signature keys are in `state`, else None.

    lightly's `nn.Sequential` ResNet keys are renamed to torchvision's in place (`backbone.4.0.conv1.weight` ->
    `backbone.layer1.0.conv1.weight`).
    """
    for prefix in fmt.prefixes:
        for arch in fmt.architectures:
            if arch == RESNET and _is_sequential_resnet(state, prefix):
                _rename_sequential_resnet(state, prefix)
            if _has_signature(state, prefix, arch):
                dropped: dict[str, int] = {}
                for name in state:
                    if not name.startswith(prefix):
                        top = name.split(".")[0]
                        dropped[top] = dropped.get(top, 0) + 1
                return EncoderLayout(arch, prefix, dropped)
    return None


def _has_signature(state: dict, prefix: str, arch: str) -> bool:
    if arch == RESNET:
        return f"{prefix}conv1.weight" in state and f"{prefix}layer1.0.conv1.weight" in state
    vit = f"{prefix}patch_embed.proj.weight" in state and f"{prefix}blocks.0.attn.qkv.weight" in state
    if not vit:
        return False
    return (f"{prefix}cls_token" in state) == (arch == VIT)


def _is_sequential_resnet(state: dict, prefix: str) -> bool:
    return f"{prefix}0.weight" in state and f"{prefix}4.0.conv1.weight" in state


def _rename_sequential_resnet(state: dict, prefix: str) -> None:
    for name in [k for k in state if k.startswith(prefix)]:
        index, _, rest = name[len(prefix) :].partition(".")
        if index in _SEQUENTIAL_RESNET:
            state[f"{prefix}{_SEQUENTIAL_RESNET[index]}.{rest}"] = state.pop(name)


def unmatched_keys(state: dict[str, Tensor], layout: EncoderLayout, consumed: set[str]) -> list[str]:
    """Keys under the encoder's prefix that the conversion did not use and that no known non-encoder part explains."""
    skip = tuple(layout.prefix + p for p in _NOT_ENCODER[layout.architecture])
    return sorted(k for k in state if k.startswith(layout.prefix) and k not in consumed and not k.startswith(skip))


def dropped_parts(state: dict[str, Tensor], layout: EncoderLayout) -> dict[str, int]:
    """Every part of the file left out of the export: the layout's `dropped` plus non-encoder keys under its prefix."""
    parts = dict(layout.dropped)
    skip = _NOT_ENCODER[layout.architecture]
    for name in state:
        rest = name[len(layout.prefix) :] if name.startswith(layout.prefix) else None
        if rest is not None and rest.startswith(skip):
            top = layout.prefix + rest.split(".")[0]
            parts[top] = parts.get(top, 0) + 1
    return parts


def describe_layout_error(
    state: dict[str, Tensor], fmt: SourceFormat, source: str, container: str, limit: int = 6
) -> ConversionError:
    """The error for a file in which `fmt`'s encoder was not found: what was tried, keys, and formats that fit."""
    tried = ", ".join(f"{_ARCH_NAMES[a]} at '{p}'" for p in fmt.prefixes for a in fmt.architectures)
    shown = preview(sorted(state), limit)
    fits = []
    for other in FORMATS.values():
        if other.name != fmt.name:
            layout = find_encoder(dict(state), other)
            if layout is not None:
                fits.append(f"--from {other.name} ({_ARCH_NAMES[layout.architecture]} at '{layout.prefix}')")
    hint = (
        f" The file fits: {'; '.join(fits)}."
        if fits
        else f" No supported format fits it (tried {', '.join(FORMATS)}): it is not a layout ssl-hf convert knows."
    )
    return ConversionError(
        f"{source} holds no {fmt.title} encoder: looked in {container} for a {tried}. Unmatched keys: {shown}.{hint}"
    )


def preview(keys: list[str], limit: int = 6) -> str:
    """The first `limit` keys, comma-separated, and how many there are in all when some are left out."""
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
