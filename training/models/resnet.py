"""ResNet-18/50 with torchvision's exact parameter names, and an ImageNet weight loader.

torchvision is not a dependency of this project (no torchvision build imports against the
CPU torch wheel), so the architecture is written here. Parameter names and shapes are those of
``torchvision.models.resnet{18,50}`` (``conv1``, ``bn1``, ``layer1``..``layer4`` made of blocks
with ``conv1/bn1/conv2/bn2[/conv3/bn3]`` and ``downsample.0`` (1×1 conv) / ``downsample.1``
(BN), then ``fc``), so a torchvision-format ImageNet state dict loads with ``strict=True``.

Like torchvision (the "ResNet v1.5" variant), the bottleneck strides in its 3×3 conv.
``last_stride=1`` removes the stride of ``layer4`` (AlignedReID re-implementations, BoT), which
doubles the final feature map: 256×128 input gives 16×8 instead of 8×4.

Re-ID models use the backbone without ``fc`` (``num_classes=None``) through
:meth:`ResNet.forward_features`; :func:`load_imagenet_weights` drops ``fc`` from the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

IMAGENET_NUM_CLASSES = 1000
"""Width of the ImageNet classifier ``fc`` in torchvision checkpoints."""


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4, residual connection (ResNet-50)."""

    expansion = 4

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """ResNet with torchvision's parameter names.

    ``num_classes=None`` builds no ``fc`` (the re-ID backbone); ``out_channels`` is the
    channel count of the final feature map (512 for ResNet-18, 2048 for ResNet-50).
    """

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int],
        num_classes: int | None = IMAGENET_NUM_CLASSES,
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self.in_ch = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=last_stride)
        self.out_channels = 512 * block.expansion
        self.fc = nn.Linear(self.out_channels, num_classes) if num_classes else None
        _init_weights(self)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_ch != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.in_ch, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.in_ch, planes, stride, downsample)]
        self.in_ch = planes * block.expansion
        layers += [block(self.in_ch, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [N, 3, H, W] -> final feature map [N, C, H/32, W/32] (H/16 with last_stride 1)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [N, 64, H/4, W/4]
        x = self.layer1(x)  # [N, 64·e, H/4, W/4]
        x = self.layer2(x)  # [N, 128·e, H/8, W/8]
        x = self.layer3(x)  # [N, 256·e, H/16, W/16]
        return self.layer4(x)  # [N, 512·e, H/32, W/32]

    def forward(self, x: Tensor) -> Tensor:
        """Feature map, or ImageNet logits [N, num_classes] when the model has ``fc``."""
        x = self.forward_features(x)
        if self.fc is None:
            return x
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal convs (fan out), BN weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet18(num_classes: int | None = IMAGENET_NUM_CLASSES, last_stride: int = 2) -> ResNet:
    """ResNet-18 (11.7 M parameters with the 1000-way ``fc``)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, last_stride=last_stride)


def resnet50(num_classes: int | None = IMAGENET_NUM_CLASSES, last_stride: int = 2) -> ResNet:
    """ResNet-50 (25.6 M parameters with the 1000-way ``fc``)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, last_stride=last_stride)


def torchvision_cache_dir() -> Path:
    """Where torchvision caches downloaded weights: ``$TORCH_HOME/hub/checkpoints``.

    ``TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``
    (``torch.hub.get_dir()`` applies those rules).
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_cached_imagenet_weights(arch: str) -> Path:
    """The torchvision-cached ImageNet checkpoint of ``arch`` (``resnet50-*.pth``).

    Nothing is downloaded. Raises FileNotFoundError naming the directory searched.
    """
    cache = torchvision_cache_dir()
    found = sorted(cache.glob(f"{arch}-*.pth")) if cache.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no cached ImageNet weights for {arch}: {cache / (arch + '-*.pth')} matches nothing "
            f"(TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}); nothing is downloaded - "
            "put a torchvision-format checkpoint there or pass its path"
        )
    if len(found) > 1:
        logger.info("several cached %s checkpoints %s; using %s", arch, found, found[0])
    return found[0]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``path``: a plain one, or wrapped in ``{"state_dict": ...}``.

    A ``module.`` prefix (from ``nn.DataParallel``) is stripped. Errors name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling or zip errors: say which file
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_imagenet_weights(backbone: ResNet, path: str | Path) -> None:
    """Load torchvision-format ImageNet weights from ``path`` into ``backbone``; ``fc`` ignored.

    Every other parameter and buffer must match by name and shape (strict), else ValueError
    naming the file and the first offending keys.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} is not a torchvision-format checkpoint of this ResNet: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} "
            f"({len(unexpected)}), shape mismatch {wrong[:5]} ({len(wrong)})"
        )
    if backbone.fc is not None:  # keep the model's own classifier
        state.update({f"fc.{k}": v for k, v in backbone.fc.state_dict().items()})
    backbone.load_state_dict(state, strict=True)
    logger.info("loaded ImageNet weights from %s (%d tensors, fc ignored)", path, len(state))
