"""OSNet (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019).

Parameter names and shapes follow torchreid's model-zoo checkpoints (``osnet_x0_25``,
``osnet_x1_0``; e.g. ``osnet_x0_25_msmt17.pth``: a plain state dict with a 1,041-way
``classifier``) so those load with ``strict=True``:

- ``conv1``: 7×7/2 conv + BN + ReLU, then ``maxpool`` 3×3/2;
- ``conv2``, ``conv3``: two OSBlocks each, then a transition ``[2]`` (1×1 conv + BN + ReLU,
  2×2 average pool); ``conv4``: two OSBlocks; ``conv5``: 1×1 conv + BN + ReLU;
- ``global_avgpool``, ``fc`` (Linear → BN1d → ReLU, 512-d), ``classifier``.

An OSBlock reduces to ``mid = out/4`` channels (1×1), runs four streams of 1, 2, 3 and 4
"lite 3×3" layers (1×1 conv → depthwise 3×3 → BN → ReLU; receptive fields 3, 5, 7, 9),
weights each stream by the *same* channel gate (the unified aggregation gate: global average
pool → 1×1 conv to mid/16 → ReLU → 1×1 conv to mid → sigmoid), sums them, expands back with a
1×1 conv + BN, adds the (projected) input and applies ReLU.

The total stride is 16: 256×128 input gives a 16×8 final feature map.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn

logger = logging.getLogger(__name__)

OSNET_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_25": (16, 64, 96, 128),
}
"""Channels after conv1 and after conv2, conv3, conv4 for each width multiplier."""


class ConvBnAct(nn.Module):
    """Conv (no bias) + BN, then ReLU unless ``relu=False``; names ``conv``/``bn`` as torchreid."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)
        self.act: nn.Module = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class LiteConv3x3(nn.Module):
    """Lite 3×3: pointwise 1×1 conv, depthwise 3×3 conv, BN, ReLU (torchreid's LightConv3x3)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False, groups=out_ch)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: x · sigmoid(fc2(relu(fc1(avgpool(x))))), per channel."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        g = self.global_avgpool(x)  # [N, C, 1, 1]
        g = self.sigmoid(self.fc2(self.relu(self.fc1(g))))  # [N, C, 1, 1]
        return x * g


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: four lite-3×3 streams fused by one shared gate."""

    def __init__(self, in_ch: int, out_ch: int, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = out_ch // bottleneck_reduction
        self.conv1 = ConvBnAct(in_ch, mid)
        self.conv2a = LiteConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*[LiteConv3x3(mid, mid) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LiteConv3x3(mid, mid) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LiteConv3x3(mid, mid) for _ in range(4)])
        self.gate = ChannelGate(mid)
        self.conv3 = ConvBnAct(mid, out_ch, relu=False)
        self.downsample = ConvBnAct(in_ch, out_ch, relu=False) if in_ch != out_ch else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv1(x)  # [N, mid, H, W]
        x2 = (
            self.gate(self.conv2a(x1))
            + self.gate(self.conv2b(x1))
            + self.gate(self.conv2c(x1))
            + self.gate(self.conv2d(x1))
        )  # [N, mid, H, W]
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(x2) + identity)  # [N, out, H, W]


def _stage(in_ch: int, out_ch: int, blocks: int, reduce: bool) -> nn.Sequential:
    """``blocks`` OSBlocks, then (if ``reduce``) the transition 1×1 conv + 2×2 average pool."""
    layers: list[nn.Module] = [OSBlock(in_ch, out_ch)]
    layers += [OSBlock(out_ch, out_ch) for _ in range(1, blocks)]
    if reduce:
        layers.append(nn.Sequential(ConvBnAct(out_ch, out_ch), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class OSNet(nn.Module):
    """OSNet with torchreid's parameter names.

    ``feature_dim=0`` builds no ``fc`` and ``num_classes=None`` no ``classifier``: the re-ID
    backbone is ``OSNet(channels, num_classes=None, feature_dim=0)`` used through
    :meth:`forward_features`. ``out_channels`` is the channel count of the final feature map.
    """

    def __init__(
        self,
        channels: tuple[int, int, int, int],
        blocks: tuple[int, int, int] = (2, 2, 2),
        num_classes: int | None = None,
        feature_dim: int = 512,
    ) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.conv1 = ConvBnAct(3, c0, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(c0, c1, blocks[0], reduce=True)
        self.conv3 = _stage(c1, c2, blocks[1], reduce=True)
        self.conv4 = _stage(c2, c3, blocks[2], reduce=False)
        self.conv5 = ConvBnAct(c3, c3)
        self.out_channels = c3
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = _fc_layer(c3, feature_dim) if feature_dim > 0 else None
        feat = feature_dim if feature_dim > 0 else c3
        self.classifier = nn.Linear(feat, num_classes) if num_classes else None
        init_osnet_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [N, 3, H, W] -> final feature map [N, C, H/16, W/16]."""
        x = self.maxpool(self.conv1(x))  # [N, c0, H/4, W/4]
        x = self.conv2(x)  # [N, c1, H/8, W/8]
        x = self.conv3(x)  # [N, c2, H/16, W/16]
        x = self.conv4(x)  # [N, c3, H/16, W/16]
        return self.conv5(x)  # [N, c3, H/16, W/16]

    def forward(self, x: Tensor) -> Tensor:
        """torchreid's behaviour: the feature [N, D] in eval mode, logits in training mode."""
        v = self.global_avgpool(self.forward_features(x)).flatten(1)  # [N, c3]
        if self.fc is not None:
            v = self.fc(v)  # [N, feature_dim]
        if not self.training or self.classifier is None:
            return v
        return self.classifier(v)  # [N, num_classes]


def _fc_layer(in_dim: int, out_dim: int) -> nn.Sequential:
    """torchreid's embedding layer: Linear → BN1d → ReLU (keys ``fc.0``, ``fc.1``)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))


def init_osnet_weights(model: nn.Module) -> None:
    """torchreid's initialisation: Kaiming-normal convs, BN 1/0, Linear N(0, 0.01) / 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def osnet(name: str, num_classes: int | None = None, feature_dim: int = 512) -> OSNet:
    """OSNet at the width ``name`` (one of ``OSNET_WIDTHS``); ValueError for an unknown name."""
    if name not in OSNET_WIDTHS:
        raise ValueError(f"unknown OSNet {name!r}; valid: {sorted(OSNET_WIDTHS)}")
    return OSNet(OSNET_WIDTHS[name], num_classes=num_classes, feature_dim=feature_dim)


def osnet_x0_25(num_classes: int | None = None, feature_dim: int = 512) -> OSNet:
    """OSNet ×0.25 (channels 16/64/96/128), as torchreid's ``osnet_x0_25``."""
    return osnet("osnet_x0_25", num_classes, feature_dim)


def osnet_x1_0(num_classes: int | None = None, feature_dim: int = 512) -> OSNet:
    """OSNet ×1.0 (channels 64/256/384/512), as torchreid's ``osnet_x1_0``."""
    return osnet("osnet_x1_0", num_classes, feature_dim)
