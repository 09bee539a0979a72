"""SwinUNETR: Moon et al.'s stage-2 wrinkle Swin UNETR (labhai/ffhq-wrinkle-dataset), with its published module names.

Their inference.py builds MONAI's 2-D `SwinUNETR(in_channels=4, out_channels=2)` from their own copy of
the file, whose defaults are feature size 48, depths (2, 2, 2, 2), heads (3, 6, 12, 24), window 16,
patch 4, instance norm, "merging" downsampling, no v2 blocks, qkv bias, MLP ratio 4, no dropout and
layer-normalized hidden states. This is that network written in plain PyTorch, with exactly the names and
shapes of their released stage2_swinunetr.pth: 159 state-dict keys (the int64 `relative_position_index`
buffers among them), 25,241,228 parameters (/work/shared/PUBLISHED_MODELS.md section 1). Native MONAI
differs in one module: its `decoder1` has a hard-coded 2x2 transposed conv, theirs is 4x4 with stride 4.

Conventions (this project's, applied inside the model; unet/inputs.py):
  Input: float N x 4 x H x W in [0, 1], RGB then the texture map / 255, which `moon_scaling` turns into
  Moon et al.'s x / 255 * 2 - 1 (in eval mode with their quirk: an all-zero texture map stays 0, not -1).
  Any H and W: the input is zero-padded at the bottom and right to a multiple of 1024 (patch 4, then four
  2x merges: 4**5, the size MONAI's network accepts) before scaling, so the padding reads as masked-out,
  black pixels without texture (-1), and the output is cropped back.
  Output: N x 1 x H x W logits equal to logit1 - logit0 of their two-class head, so sigmoid(output)
  equals softmax(their logits)[:, 1], and output > 0 is their argmax(1) == 1 (class 1 = wrinkle).

MONAI (and einops) are not needed to run it: only tests/test_swin_unetr.py imports MONAI, to check that
this model and MONAI's, given the same weights, give the same logits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unet.freezing import EncoderFreezing
from unet.inputs import moon_scaling
from unet.unet_parts import pad_to_multiple

SWIN_KEY_COUNT = 159
SWIN_PARAMETER_COUNT = 25_241_228
# MONAI's shifted-window mask value: large enough that softmax gives ~0 weight across region borders.
_MASKED = -100.0


def _named_conv(conv: nn.Module) -> nn.Sequential:
    """`conv` under the name `conv`, as MONAI's Convolution wrapper holds it (so the keys read `....conv.weight`)."""
    return nn.Sequential(OrderedDict(conv=conv))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """B x H x W x C -> (B * windows) x window**2 x C, windows in row-major order, tokens row-major inside."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """The inverse of `window_partition`: (B * windows) x window**2 x C -> B x H x W x C."""
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def relative_position_index(window: int) -> torch.Tensor:
    """window**2 x window**2 int64 index into the (2 window - 1)**2-row bias table: row-major (dy, dx) offsets."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2 x n x n, each in [0, 2 window - 2]
    return offsets[0] * (2 * window - 1) + offsets[1]


def shifted_window_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """windows x window**2 x window**2 additive mask for a map rolled by -shift: 0 between tokens of the same
    region of the unrolled map, -100 between tokens that the roll brought together from different regions."""

    def regions(size: int) -> torch.Tensor:
        # Three bands per axis as MONAI labels them: untouched, the last full window before the wrap, the
        # wrapped-around shift (the first two never share a window, so only the last boundary masks anything).
        band = torch.zeros(size, dtype=torch.long, device=device)
        band[size - window : size - shift] = 1
        band[size - shift :] = 2
        return band

    labels = (regions(h)[:, None] * 3 + regions(w)[None, :]).view(1, h, w, 1)
    labels = window_partition(labels, window).squeeze(-1)  # windows x n
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill_(different, _MASKED)


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch conv to `dim` channels (`proj`), no norm."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative-position bias per head."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # Persistent: the released state dict holds it (MONAI registers it so), and strict loading needs it.
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)  # MONAI's initialization

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias.view(n, n, -1).permute(2, 0, 1)
        if mask is not None:  # the windows of each image take their own mask: B * windows -> B x windows
            windows = mask.shape[0]
            attn = (attn.view(b // windows, windows, self.heads, n, n) + mask[:, None]).view(b, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear, exact GELU, linear (`linear1`, `linear2`, MONAI's MLPBlock names)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.act(self.linear1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention then pre-norm MLP, each residual; B x H x W x C in and out."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_reverse(y, self.window, b, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (offsets (0,0), (1,0), (0,1), (1,1) as (row, col)), layer norm, linear 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        # b, rows, row offset, cols, col offset, c -> (col offset, row offset) order: MONAI's 2-D concatenation.
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """`depth` Swin blocks, every second one shifted by half a window, then patch merging (`downsample`)."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, self.shift if i % 2 else 0, mlp_ratio) for i in range(depth))
        self.downsample = PatchMerging(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = shifted_window_mask(x.shape[1], x.shape[2], self.window, self.shift, x.device) if len(self.blocks) > 1 else None
        for block in self.blocks:
            x = block(x, mask)
        return self.downsample(x)


class SwinTransformer(nn.Module):
    """Patch embedding and four stages (`layers1..4`, each a one-element list as MONAI names them); returns
    the five hidden states (patch embedding, each stage's output), layer-normalized without affine, N x C x H x W."""

    def __init__(self, in_channels: int, dim: int, patch: int, depths: Sequence[int], heads: Sequence[int], window: int, mlp_ratio: float):
        super().__init__()
        self.patch_embed = PatchEmbed(in_channels, dim, patch)
        self.layers1 = nn.ModuleList([SwinStage(dim, depths[0], heads[0], window, mlp_ratio)])
        self.layers2 = nn.ModuleList([SwinStage(2 * dim, depths[1], heads[1], window, mlp_ratio)])
        self.layers3 = nn.ModuleList([SwinStage(4 * dim, depths[2], heads[2], window, mlp_ratio)])
        self.layers4 = nn.ModuleList([SwinStage(8 * dim, depths[3], heads[3], window, mlp_ratio)])

    @staticmethod
    def _hidden(x: torch.Tensor) -> torch.Tensor:
        """MONAI's `proj_out(normalize=True)`: a parameter-free layer norm over channels, back to channels first."""
        return F.layer_norm(x, x.shape[-1:]).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The stages work channels last (B x H x W x C), as attention and layer norm want it.
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        hidden = [self._hidden(x)]
        for stage in (self.layers1, self.layers2, self.layers3, self.layers4):
            x = stage[0](x)
            hidden.append(self._hidden(x))
        return hidden


def _mean_of_rows(x: torch.Tensor) -> torch.Tensor:
    """N x C x 1 x 1 mean of N x C x H x W, row by row, then over the rows: two short float32 sums."""
    return x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)


class InstanceNorm(nn.InstanceNorm2d):
    """Instance norm without affine. Exported (export.py), it is written out as means of row means:
    ONNX Runtime's one-pass float32 mean over a 1024 x 1024 map is off by ~1e-3, which the tiny variance
    of a mostly padded map turns into errors of 0.13 in the normalized map and 0.02 in the probability."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        centred = x - _mean_of_rows(x)
        return centred * torch.rsqrt(_mean_of_rows(centred.square()) + self.eps)


class ResBlock(nn.Module):
    """MONAI's UnetResBlock: (3x3 conv, instance norm, leaky ReLU, 3x3 conv, instance norm) + shortcut, leaky
    ReLU; the shortcut is a 1x1 conv + instance norm when the width changes. Convs without bias, norms without affine."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _named_conv(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))
        self.conv2 = _named_conv(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False))
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1 = InstanceNorm(out_channels)
        self.norm2 = InstanceNorm(out_channels)
        self.conv3 = _named_conv(nn.Conv2d(in_channels, out_channels, 1, bias=False)) if in_channels != out_channels else None
        self.norm3 = InstanceNorm(out_channels) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x)))))
        if self.conv3 is not None:
            x = self.norm3(self.conv3(x))
        out += x  # in place: `out` is a fresh tensor, and at full resolution it is 48 x H x W floats
        return self.lrelu(out)


class EncoderBlock(nn.Module):
    """MONAI's UnetrBasicBlock with a residual block: one ResBlock named `layer`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.layer = ResBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class UpBlock(nn.Module):
    """MONAI's UnetrUpBlock: transposed conv (kernel = stride = `scale`, no bias), concatenation
    [upsampled, skip], ResBlock from twice the width."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2):
        super().__init__()
        self.transp_conv = _named_conv(nn.ConvTranspose2d(in_channels, out_channels, scale, stride=scale, bias=False))
        self.conv_block = ResBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.transp_conv(x), skip], dim=1))


class OutBlock(nn.Module):
    """The 1x1 output conv with bias, named `conv.conv`."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.conv = _named_conv(nn.Conv2d(in_channels, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SwinUNETR(EncoderFreezing):
    """Moon et al.'s Swin UNETR (4 input channels, 2 classes). See the module docstring for input and output.

    Other settings build MONAI's network of that shape (`network`, e.g. their 3-in, 1-out stage 1);
    `class_logits` and `forward` take this project's 4-channel input and need the 2-class head.
    """

    stride = 1024
    in_channels = 4

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 2,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 16,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"SwinUNETR has four stages (layers1..4): got depths {tuple(depths)}, num_heads {tuple(num_heads)}")
        stride = patch_size**5  # MONAI's input rule
        # The deepest stage's map is a multiple of this; MONAI pads or shrinks windows that do not tile a map,
        # which this model does not implement, so such a configuration is refused rather than run differently.
        if (stride // (patch_size * 8)) % window_size or window_size % 2:
            raise ValueError(
                f"window_size {window_size} must be even and tile a {stride // (patch_size * 8)}-token map (patch_size {patch_size})"
            )
        self.stride = stride
        self.in_channels = in_channels
        self._frozen_bn: list[str] = []
        f = feature_size
        self.swinViT = SwinTransformer(in_channels, f, patch_size, depths, num_heads, window_size, mlp_ratio)
        self.encoder1 = EncoderBlock(in_channels, f)
        self.encoder2 = EncoderBlock(f, f)
        self.encoder3 = EncoderBlock(2 * f, 2 * f)
        self.encoder4 = EncoderBlock(4 * f, 4 * f)
        self.encoder10 = EncoderBlock(16 * f, 16 * f)
        self.decoder5 = UpBlock(16 * f, 8 * f)
        self.decoder4 = UpBlock(8 * f, 4 * f)
        self.decoder3 = UpBlock(4 * f, 2 * f)
        self.decoder2 = UpBlock(2 * f, f)
        self.decoder1 = UpBlock(f, f, scale=patch_size)  # their change to MONAI: back from the patch grid in one step
        self.out = OutBlock(f, out_channels)

    def encoder_modules(self) -> list[nn.Module]:
        """The Swin transformer (the conv `encoder*` blocks are UNETR's skip processing and always train)."""
        return [self.swinViT]

    def encoder_stages(self) -> list[list[nn.Module]]:
        """Patch embedding, then the four Swin stages, shallowest first."""
        vit = self.swinViT
        return [[vit.patch_embed], [vit.layers1], [vit.layers2], [vit.layers3], [vit.layers4]]

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """Their network as MONAI runs it: scaled N x in_channels x H x W input, H and W multiples of `stride`."""
        hidden = self.swinViT(x)
        y = self.encoder10(hidden[4])
        y = self.decoder5(y, hidden[3])
        y = self.decoder4(y, self.encoder4(hidden[2]))
        y = self.decoder3(y, self.encoder3(hidden[1]))
        y = self.decoder2(y, self.encoder2(hidden[0]))
        del hidden  # the full-resolution stages below are the memory peak
        return self.out(self.decoder1(y, self.encoder1(x)))

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Their N x 2 x H x W logits for this project's N x 4 x H x W input (see the module docstring)."""
        height, width = x.shape[-2:]
        # Padded before scaling, so the padding reads as masked-out pixels (black, no texture: -1), not as mid-grey.
        x = moon_scaling(pad_to_multiple(x, self.stride), zero_map_quirk=not self.training)
        return self.network(x)[..., :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W wrinkle logits: logit1 - logit0, so sigmoid of it is softmax(...)[:, 1]."""
        logits = self.class_logits(x)
        return logits[:, 1:2] - logits[:, 0:1]
