"""BiSeNet face parsing (19 CelebAMask-HQ classes), as the seed and the FFHQ-Wrinkle authors use it.

Written in this project with the module names of the public face-parsing.PyTorch model, so its
published checkpoint (`79999_iter.pth`) loads as is, key for key. Only the context path is used; its
ResNet18 stride-8 features stand in for the spatial path, as in that model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from unet.unet_model import WeightsError, WeightsNotFound, load_weights_file

CLASSES = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
)
SKIN_CLASSES = (1, 10)  # skin and nose, as FFHQ-Wrinkle counts skin
INPUT_SIZE = 512
CHECKPOINT_HELP = (
    "BiSeNet weights not found at {path}: download 79999_iter.pth (linked from the README of "
    "github.com/zllrunning/face-parsing.PyTorch) and pass its path"
)
REDOWNLOAD_HELP = "download 79999_iter.pth again from the link in the README of github.com/zllrunning/face-parsing.PyTorch"


class ConvBNReLU(nn.Module):
    """Convolution (no bias), batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinementModule(nn.Module):
    """A 3x3 conv whose output is reweighted per channel by its global average."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))


class ResNet18Features(nn.Module):
    """ResNet18 trunk returning stride-8, -16 and -32 features (torchvision's key names)."""

    def __init__(self):
        super().__init__()
        trunk = resnet18(weights=None)
        self.conv1, self.bn1, self.maxpool = trunk.conv1, trunk.bn1, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class ContextPath(nn.Module):
    """ResNet18 features refined top-down with attention and a global context vector."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        up32 = self.conv_head32(F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusionModule(nn.Module):
    """Concatenate two feature maps, 1x1 conv, then a squeeze-excitation style residual reweighting."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel_size=1, padding=0)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * attention


class BiSeNetOutput(nn.Module):
    """3x3 conv-BN-ReLU, then 1x1 conv to class logits."""

    def __init__(self, in_channels: int, mid_channels: int, classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parsing network: logits N x classes x H x W for ImageNet-normalized RGB input."""

    def __init__(self, classes: int = len(CLASSES)):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, classes)
        # Auxiliary heads of the training recipe: unused at inference, kept so checkpoints load strictly.
        self.conv_out16 = BiSeNetOutput(128, 64, classes)
        self.conv_out32 = BiSeNetOutput(128, 64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, context8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


def load_bisenet(path: str | Path, device: torch.device | str = "cpu") -> BiSeNet:
    """The BiSeNet of a face-parsing checkpoint (published key names), in eval mode on `device`;
    a missing, unreadable or foreign file is a one-line `WeightsError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(CHECKPOINT_HELP.format(path=path))
    state = load_weights_file(path, REDOWNLOAD_HELP)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = BiSeNet()
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # strict=False still refuses tensors of the wrong shape
        reshaped = [k for k, v in model.state_dict().items() if k in state and getattr(state[k], "shape", None) != v.shape]
        raise WeightsError(
            f"{path}: not a BiSeNet face-parsing checkpoint ({len(reshaped)} tensors of the wrong shape, e.g. {reshaped[:2]}); {REDOWNLOAD_HELP}"
        ) from None
    if missing or unexpected:
        raise WeightsError(
            f"{path}: not a BiSeNet face-parsing checkpoint ({len(missing)} keys missing, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}); {REDOWNLOAD_HELP}"
        )
    return model.to(device).eval()


@torch.no_grad()
def parse_face(model: BiSeNet, image: np.ndarray) -> np.ndarray:
    """Class map (H x W uint8) of an RGB uint8 image, parsed at 512 px and resized back (nearest)."""
    import cv2

    device = next(model.parameters()).device
    height, width = image.shape[:2]
    resized = cv2.resize(
        image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA if max(height, width) > INPUT_SIZE else cv2.INTER_LINEAR
    )
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].float().div(255).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    labels = model((x - mean) / std).argmax(1)[0].to(torch.uint8).cpu().numpy()
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def skin_mask(labels: np.ndarray, skin_classes: tuple[int, ...] = SKIN_CLASSES) -> np.ndarray:
    """Boolean skin mask from a class map."""
    return np.isin(labels, skin_classes)
