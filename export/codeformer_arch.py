"""CodeFormer (Zhou et al., NeurIPS 2022) written for ONNX export.

Module structure and attribute names follow the official ``sczhou/CodeFormer`` code
(``basicsr/archs/codeformer_arch.py`` + ``vqgan_arch.py``) so that the official checkpoint
(``codeformer.pth``, weights under ``params_ema``) loads with ``strict=True``.

Differences from the official inference code, all deliberate:

- the fidelity ``w`` is a tensor ``[B, 1]`` and the fuse blocks always run; their residual is
  multiplied by ``w`` (official: ``if w > 0``), so ``w`` stays a live graph input and ``w = 0``
  gives exactly the official ``w = 0`` result;
- adaptive instance normalisation of the looked-up code features is always applied (the official
  inference script calls the network with ``adain=True``);
- the codebook lookup is ``argmax(logits)`` → embedding gather, which equals the official
  ``softmax → topk(1) → one-hot @ codebook`` and exports to ONNX ``ArgMax`` + ``Gather``;
- widths, depths and GroupNorm groups are parameters, so a ``tiny`` preset reuses this code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CodeFormerConfig:
    """Hyper-parameters. ``full`` equals the official ``CodeFormer()`` defaults."""

    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    img_size: int = 512
    emb_dim: int = 256
    codebook_size: int = 1024
    dim_embd: int = 512
    n_head: int = 8
    n_layers: int = 9
    connect_list: tuple[str, ...] = ("32", "64", "128", "256")
    norm_groups: int = 32

    @property
    def latent_side(self) -> int:
        return self.img_size // 2 ** (len(self.ch_mult) - 1)


CODEFORMER_PRESETS: dict[str, CodeFormerConfig] = {
    "full": CodeFormerConfig(),
    # Same graph, narrow: 512x512 in/out and a 16x16 latent grid like the full model.
    "tiny": CodeFormerConfig(
        nf=4, emb_dim=32, codebook_size=64, dim_embd=64, n_head=4, n_layers=2, norm_groups=4
    ),
}


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResBlock(nn.Module):
    """GroupNorm → swish → conv, twice, plus a (1x1-projected when widths differ) skip."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = _group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        x = self.conv1(_swish(self.norm1(x_in)))
        x = self.conv2(_swish(self.norm2(x)))
        skip = self.conv_out(x_in) if self.in_channels != self.out_channels else x_in
        return x + skip


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 conv projections (VQGAN style)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, height, width = q.shape
        q = q.reshape(b, c, height * width).permute(0, 2, 1)  # B, HW, C
        k = k.reshape(b, c, height * width)  # B, C, HW
        attn = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)  # B, HW(query), HW(key)
        v = v.reshape(b, c, height * width)
        h = torch.bmm(v, attn.permute(0, 2, 1)).reshape(b, c, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding right/bottom by one pixel."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """Image → latent ``[B, emb_dim, S, S]``; ``skip_index[side]`` = block whose output is fused.

    The fused feature at a resolution is the output of its last residual block (official
    ``fuse_encoder_block``: 512→2, 256→5, 128→8, 64→11, 32→14).
    """

    def __init__(self, cfg: CodeFormerConfig):
        super().__init__()
        groups = cfg.norm_groups
        in_mult = (1, *cfg.ch_mult)
        side = cfg.img_size
        blocks: list[nn.Module] = [nn.Conv2d(3, cfg.nf, 3, 1, 1)]
        self.skip_index: dict[str, int] = {}
        channels = cfg.nf
        for level, mult in enumerate(cfg.ch_mult):
            channels = cfg.nf * in_mult[level]
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(channels, cfg.nf * mult, groups))
                channels = cfg.nf * mult
                self.skip_index[str(side)] = len(blocks) - 1
                if side in cfg.attn_resolutions:
                    blocks.append(AttnBlock(channels, groups))
            if level != len(cfg.ch_mult) - 1:
                blocks.append(Downsample(channels))
                side //= 2
        blocks += [
            ResBlock(channels, channels, groups),
            AttnBlock(channels, groups),
            ResBlock(channels, channels, groups),
            _group_norm(channels, groups),
            nn.Conv2d(channels, cfg.emb_dim, 3, 1, 1),
        ]
        self.blocks = nn.ModuleList(blocks)


class Generator(nn.Module):
    """Latent ``[B, emb_dim, S, S]`` → image; ``fuse_index[side]`` = block after which to fuse.

    Fusion happens after the first residual block of a resolution (official
    ``fuse_generator_block``: 16→6, 32→9, 64→12, 128→15, 256→18, 512→21).
    """

    def __init__(self, cfg: CodeFormerConfig):
        super().__init__()
        groups = cfg.norm_groups
        channels = cfg.nf * cfg.ch_mult[-1]
        side = cfg.latent_side
        blocks: list[nn.Module] = [
            nn.Conv2d(cfg.emb_dim, channels, 3, 1, 1),
            ResBlock(channels, channels, groups),
            AttnBlock(channels, groups),
            ResBlock(channels, channels, groups),
        ]
        self.fuse_index: dict[str, int] = {}
        for level in reversed(range(len(cfg.ch_mult))):
            out_channels = cfg.nf * cfg.ch_mult[level]
            for block_number in range(cfg.res_blocks):
                blocks.append(ResBlock(channels, out_channels, groups))
                channels = out_channels
                # attention resolutions fuse after their last block (official '16': 6)
                if block_number == 0 or side in cfg.attn_resolutions:
                    self.fuse_index[str(side)] = len(blocks) - 1
                if side in cfg.attn_resolutions:
                    blocks.append(AttnBlock(channels, groups))
            if level != 0:
                blocks.append(Upsample(channels))
                side *= 2
        blocks += [_group_norm(channels, groups), nn.Conv2d(channels, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)


class VectorQuantizer(nn.Module):
    """The learned codebook ``embedding.weight`` ``[codebook_size, emb_dim]``."""

    def __init__(self, codebook_size: int, emb_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        self.embedding.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def lookup(self, indices: torch.Tensor, side: int) -> torch.Tensor:
        """Code indices ``[B, side*side]`` int64 → features ``[B, emb_dim, side, side]``, contiguous.

        The permuted view is channels-last in memory; without ``.contiguous()`` PyTorch's CPU
        convolutions propagate that layout through the whole generator when ``B > 1``, and the
        channels-last CPU ``GroupNorm`` kernel loses precision with the spatial size (measured,
        torch 2.13: errors of 1e-4..5e-4 in its unit-scale output at 512x512, < 1e-6 when
        contiguous), which made the PyTorch reference of the parity check 10-20x less exact at
        batch 4 than at batch 1. The ONNX graph is the same either way (byte-identical export).
        """
        feat = F.embedding(indices, self.embedding.weight)  # B, HW, C
        return feat.permute(0, 2, 1).reshape(indices.shape[0], -1, side, side).contiguous()


class MultiheadSelfAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names, sequence-first.

    Written out so the exported graph is plain MatMul/Softmax (no fused-kernel fast path).
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``[L, B, E]`` tensors → ``[L, B, E]``."""
        length, batch, dim = query.shape
        head_dim = dim // self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            x = F.linear(x, weight, bias)  # L, B, E
            return x.reshape(length, batch * self.num_heads, head_dim).transpose(0, 1)  # BH, L, D

        q = heads(query, w_q, b_q) * (head_dim**-0.5)
        k = heads(key, w_k, b_k)
        v = heads(value, w_v, b_v)
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(length, batch, dim)
        return self.out_proj(out)


class TransformerSALayer(nn.Module):
    """Pre-norm transformer layer: self-attention (position added to q and k) + GELU MLP."""

    def __init__(self, embed_dim: int, nhead: int, dim_mlp: int):
        super().__init__()
        self.self_attn = MultiheadSelfAttention(embed_dim, nhead)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(tgt)
        q = k = normed + query_pos
        tgt = tgt + self.self_attn(q, k, normed)
        return tgt + self.linear2(F.gelu(self.linear1(self.norm2(tgt))))


class FuseSftBlock(nn.Module):
    """Controllable feature transformation: ``dec + w * (dec * scale(enc) + shift(enc))``.

    Official class name ``Fuse_sft_block``; the state-dict keys are the attribute names.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * in_ch, out_ch, groups)
        self.scale = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.shift = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )

    def forward(self, enc_feat: torch.Tensor, dec_feat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``w`` is ``[B, 1, 1, 1]``; no branch on its value."""
        enc_feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(enc_feat) + self.shift(enc_feat))


def _calc_mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1)
    std = (flat.var(dim=2) + eps).sqrt().reshape(b, c, 1, 1)
    return flat.mean(dim=2).reshape(b, c, 1, 1), std


def adaptive_instance_normalization(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Give ``content`` ``[B,C,H,W]`` the per-channel mean/std (unbiased) of ``style``."""
    style_mean, style_std = _calc_mean_std(style)
    content_mean, content_std = _calc_mean_std(content)
    return (content - content_mean) / content_std * style_std + style_mean


class CodeFormer(nn.Module):
    """CodeFormer face restoration network.

    ``forward(x, w)``: ``x`` ``[B, 3, 512, 512]`` float32 RGB in [-1, 1], ``w`` ``[B, 1]`` float32
    fidelity in [0, 1] (0 = strongest restoration, 1 = closest to the input) → restored face
    ``[B, 3, 512, 512]`` float32, nominally [-1, 1] (not clamped).
    """

    def __init__(self, cfg: CodeFormerConfig | None = None):
        super().__init__()
        cfg = cfg or CodeFormerConfig()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.emb_dim)
        self.generator = Generator(cfg)
        latent_tokens = cfg.latent_side**2
        self.position_emb = nn.Parameter(torch.zeros(latent_tokens, cfg.dim_embd))
        self.feat_emb = nn.Linear(cfg.emb_dim, cfg.dim_embd)
        self.ft_layers = nn.Sequential(
            *[TransformerSALayer(cfg.dim_embd, cfg.n_head, cfg.dim_embd * 2) for _ in range(cfg.n_layers)]
        )
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(cfg.dim_embd), nn.Linear(cfg.dim_embd, cfg.codebook_size, bias=False)
        )
        self.fuse_convs_dict = nn.ModuleDict()
        for side in cfg.connect_list:
            channels = self.generator.blocks[self.generator.fuse_index[side]].out_channels
            self.fuse_convs_dict[side] = FuseSftBlock(channels, channels, cfg.norm_groups)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(x, w)[2]

    def forward_parts(
        self, x: torch.Tensor, w: torch.Tensor, code_indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` with its discrete step exposed: ``(logits, indices, output)``.

        ``logits`` ``[B, HW, codebook_size]`` float32 are the transformer's code scores,
        ``indices`` ``[B, HW]`` int64 the codes looked up (``argmax(logits)``, or
        ``code_indices`` when given), ``output`` as in ``forward``. ``HW = latent_side**2``.
        ``code_indices`` ``[B, HW]`` int64 in ``[0, codebook_size)`` replaces the argmax so the
        continuous parts can be compared on another runtime's codes (the parity check); a wrong
        shape, dtype or range raises ``ValueError``.
        """
        encoder_taps = {self.encoder.skip_index[side]: side for side in self.cfg.connect_list}
        enc_feats: dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.encoder.blocks):
            x = block(x)
            if index in encoder_taps:
                enc_feats[encoder_taps[index]] = x
        lq_feat = x  # B, emb_dim, S, S

        # Transformer predicts a codebook index per latent token (sequence-first layout).
        batch = lq_feat.shape[0]
        pos_emb = self.position_emb.unsqueeze(1).expand(-1, batch, -1)  # HW, B, D
        query = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))  # HW, B, D
        for layer in self.ft_layers:
            query = layer(query, pos_emb)
        logits = self.idx_pred_layer(query).permute(1, 0, 2)  # B, HW, codebook
        if code_indices is None:
            indices = torch.argmax(logits, dim=2)  # B, HW
        else:
            indices = self._checked_indices(code_indices, logits.shape[:2])
        quant_feat = self.quantize.lookup(indices, self.cfg.latent_side)
        quant_feat = adaptive_instance_normalization(quant_feat, lq_feat)

        w = w.reshape(-1, 1, 1, 1).to(quant_feat.dtype)
        generator_taps = {self.generator.fuse_index[side]: side for side in self.cfg.connect_list}
        x = quant_feat
        for index, block in enumerate(self.generator.blocks):
            x = block(x)
            if index in generator_taps:
                side = generator_taps[index]
                x = self.fuse_convs_dict[side](enc_feats[side], x, w)
        return logits, indices, x

    def _checked_indices(self, code_indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if tuple(code_indices.shape) != tuple(shape) or code_indices.dtype != torch.int64:
            raise ValueError(
                f"code_indices must be int64 {list(shape)}, "
                f"got {code_indices.dtype} {list(code_indices.shape)}"
            )
        if code_indices.numel():
            size, low, high = self.cfg.codebook_size, int(code_indices.min()), int(code_indices.max())
            if low < 0 or high >= size:
                raise ValueError(f"code_indices must lie in [0, {size}), got [{low}, {high}]")
        return code_indices
