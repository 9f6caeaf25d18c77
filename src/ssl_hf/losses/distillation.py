"""Self-distillation losses with a centred, sharpened teacher (DINO, SelfPatch)."""

import torch
import torch.nn.functional as F
from torch import Tensor


def teacher_probabilities(teacher_logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """`softmax((t - c) / tau_t)` in float32, without gradient: DINO's centring and sharpening."""
    return F.softmax((teacher_logits.detach().float() - center.float()) / temperature, dim=-1)


def dino_loss(
    student_logits: Tensor, teacher_logits: Tensor, center: Tensor, teacher_temp: float, student_temp: float = 0.1
) -> Tensor:
    """DINO's cross-entropy between the teacher's view `t` and the student's view `s`, over every pair with `s != t`.

    `L = 1/|P| sum_{(t, s) in P, t != s} mean_b H(softmax((g_t - c) / tau_t), softmax(g_s / tau_s))`, where the
    teacher views are the first `T` student views (the global crops) and `P` holds all `T * V - T` pairs.

    Args:
        student_logits: `(V, B, K)` student outputs of all V crops, the T global crops first.
        teacher_logits: `(T, B, K)` teacher outputs of the global crops (T <= V).
        center: `(K,)` running centre of the teacher outputs.
        teacher_temp: Teacher temperature tau_t.
        student_temp: Student temperature tau_s.

    Returns:
        Scalar loss (float32).
    """
    num_teacher, num_views = teacher_logits.shape[0], student_logits.shape[0]
    if num_views < 2 or num_teacher > num_views:
        raise ValueError(f"need >= 2 student views and at most as many teacher views, got {num_views}/{num_teacher}")
    q = teacher_probabilities(teacher_logits, center, teacher_temp)  # (T, B, K)
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)  # (V, B, K)
    with torch.autocast(q.device.type, enabled=False):  # einsum would run in bf16 under autocast
        cross = -torch.einsum("tbk,vbk->tv", q, log_p) / student_logits.shape[1]  # (T, V) mean over the batch
    keep = ~torch.eye(num_teacher, num_views, dtype=torch.bool, device=cross.device)  # never the same view
    return cross[keep].mean()


def patch_distillation_loss(
    student_logits: list[Tensor],
    teacher_logits: list[Tensor],
    center: Tensor,
    teacher_temp: float,
    student_temp: float = 0.1,
) -> Tensor:
    """SelfPatch's patch loss: for every crop, each student patch against the teacher's token for the same patch.

    `L = 1/V sum_v 1/(B N_v) sum_{b, i} H(softmax((t_{v,b,i} - c) / tau_t), softmax(s_{v,b,i} / tau_s))`: every crop
    weighs the same whatever its number of patches.

    Args:
        student_logits: Per crop group, `(G, B, N, K)` (G crops of the same resolution).
        teacher_logits: The same shapes, the teacher's aggregated-neighbour tokens.
        center: `(K,)` running centre of the teacher's patch outputs.
        teacher_temp: Teacher temperature.
        student_temp: Student temperature.
    """
    total, num_views = 0.0, 0
    for s, t in zip(student_logits, teacher_logits, strict=True):
        q = teacher_probabilities(t, center, teacher_temp)
        per_token = -(q * F.log_softmax(s.float() / student_temp, dim=-1)).sum(-1)  # (G, B, N)
        total = total + per_token.mean((1, 2)).sum()
        num_views += s.shape[0]
    return total / num_views


def batch_center(teacher_logits: Tensor) -> Tensor:
    """`(K,)` float32 mean of teacher outputs over every leading dimension (views, images, patches)."""
    return teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1]).mean(0)
