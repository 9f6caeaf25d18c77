"""SelfPatch's pieces: the neighbour table, top-k neighbour selection and the class-attention aggregation module."""

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@lru_cache(maxsize=32)
def _neighbor_table(height: int, width: int, size: int, wrap: bool) -> tuple[Tensor, Tensor]:
    r = torch.arange(height).view(-1, 1, 1).expand(height, width, 1)
    c = torch.arange(width).view(1, -1, 1).expand(height, width, 1)
    half = size // 2
    offsets = [(dr, dc) for dr in range(-half, half + 1) for dc in range(-half, half + 1) if (dr, dc) != (0, 0)]
    dr = torch.tensor([o[0] for o in offsets]).view(1, 1, -1)
    dc = torch.tensor([o[1] for o in offsets]).view(1, 1, -1)
    rows, cols = r + dr, c + dc  # (h, w, size^2 - 1)
    if wrap:
        valid = torch.ones_like(rows, dtype=torch.bool)
        rows, cols = rows % height, cols % width
    else:
        valid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)  # placeholders, masked by `valid`
    return (rows * width + cols).view(height * width, -1), valid.view(height * width, -1)


def neighbor_index(
    height: int, width: int, size: int = 3, wrap: bool = True, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """The `size x size` window around every patch of an `height x width` grid, without the patch itself.

    Args:
        height: Grid rows.
        width: Grid columns.
        size: Window side (odd; SelfPatch: 3, so 8 candidates).
        wrap: Wrap around the borders (modulo the grid size, as SelfPatch's code: every patch has `size^2 - 1`
            candidates). Without wrapping, positions outside the grid are marked invalid.
        device: Device of the returned tensors.

    Returns:
        `(N, size^2 - 1)` row-major patch indices and a same-shaped bool mask of valid candidates.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"neighborhood_size must be an odd number >= 3, got {size}")
    index, valid = _neighbor_table(height, width, size, wrap)
    return index.to(device, copy=True), valid.to(device, copy=True)  # callers never alias the cached tables


def top_neighbors(tokens: Tensor, index: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Selects, for every patch, the `k` candidates whose tokens are most cosine-similar to its own.

    Args:
        tokens: `(B, N, D)` patch tokens (SelfPatch: the teacher's last block output, before any norm).
        index: `(N, M)` candidate indices from `neighbor_index`.
        valid: `(N, M)` candidate mask; invalid candidates rank last and are reported invalid.
        k: Neighbours kept (<= M).

    Returns:
        `(B, N, k)` indices into the N patches, and a `(B, N, k)` mask that is False where fewer than k valid
        candidates existed (grid corners without wrap-around).
    """
    if not 1 <= k <= index.shape[1]:
        raise ValueError(f"num_neighbors_k must be in [1, {index.shape[1]}] for this window, got {k}")
    unit = F.normalize(tokens.float(), dim=-1)
    b, n, d = unit.shape
    if n <= index.shape[1] * d:  # all-pairs Gram matrix, then pick the window: cheaper than gathering M x D per patch
        similarity = torch.gather(unit @ unit.transpose(1, 2), 2, index.expand(b, -1, -1))  # (B, N, M)
    else:
        similarity = torch.einsum("bnd,bnmd->bnm", unit, unit[:, index])
    similarity = similarity.masked_fill(~valid, float("-inf"))
    best = similarity.topk(k, dim=-1).indices  # (B, N, k) positions within the window
    chosen = torch.gather(index.expand(tokens.shape[0], -1, -1), 2, best)
    chosen_valid = torch.gather(valid.expand(tokens.shape[0], -1, -1), 2, best)
    return chosen, chosen_valid


class ClassAttentionBlock(nn.Module):
    """CaiT's class-attention block without LayerScale (SelfPatch App. A).

    `c <- c + CA(LN(cat[c, X]))` with the class token as the only query and `[c; X]` as keys/values, then
    `c <- c + MLP(LN(c))`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, cls: Tensor, tokens: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Updates the class token from the tokens.

        Args:
            cls: `(B, 1, D)` class token.
            tokens: `(B, L, D)` tokens it attends to.
            key_mask: `(B, L)` bool, False for tokens to ignore (the class token itself is always attended).
        """
        b, length, d = tokens.shape
        h = self.norm1(torch.cat([cls, tokens], dim=1))
        heads = (b, -1, self.num_heads, d // self.num_heads)
        q = self.q(h[:, :1]).view(heads).transpose(1, 2)
        k = self.k(h).view(heads).transpose(1, 2)
        v = self.v(h).view(heads).transpose(1, 2)
        mask = None
        if key_mask is not None:
            mask = torch.cat([key_mask.new_ones(b, 1), key_mask], dim=1).view(b, 1, 1, length + 1)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        cls = cls + self.proj(attended.transpose(1, 2).reshape(b, 1, d))
        return cls + self.mlp(self.norm2(cls))


class SelfPatchAggregation(nn.Module):
    """A learnable query token and class-attention blocks that summarise a set of tokens into one.

    `pool(x)` gives the image-level token (attending to every patch); `aggregate(x, index, valid)` gives one token per
    patch from its selected neighbours only. The output is not normalised (the model applies its final LayerNorm).

    Args:
        dim: Token width.
        num_heads: Attention heads (the backbone's).
        num_blocks: Class-attention blocks (2).
        mlp_ratio: MLP width / dim.
        eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, num_heads: int, num_blocks: int = 2, mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads, mlp_ratio, eps) for _ in range(num_blocks))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _run(self, tokens: Tensor, key_mask: Tensor | None = None) -> Tensor:
        cls = self.cls_token.expand(tokens.shape[0], 1, -1).to(tokens.dtype)
        for block in self.blocks:
            cls = block(cls, tokens, key_mask)
        return cls[:, 0]

    def pool(self, tokens: Tensor) -> Tensor:
        """`(B, N, D)` -> `(B, D)` image token."""
        return self._run(tokens)

    def aggregate(self, tokens: Tensor, neighbors: Tensor, valid: Tensor | None = None) -> Tensor:
        """`(B, N, D)` -> `(B, N, D)`: for every patch, class attention over its `k` selected neighbours.

        Args:
            tokens: Patch tokens.
            neighbors: `(B, N, k)` indices from `top_neighbors`.
            valid: `(B, N, k)` mask of real neighbours (None: all are real, as with wrap-around).
        """
        b, n, d = tokens.shape
        k = neighbors.shape[-1]
        gathered = torch.gather(tokens, 1, neighbors.reshape(b, n * k, 1).expand(-1, -1, d)).view(b * n, k, d)
        mask = None if valid is None else valid.reshape(b * n, k)
        return self._run(gathered, mask).view(b, n, d)
