"""Test-time flip baked into the exported graph (``reid export --flip``).

For a batch of N images the graph runs the model once on 2N images, the batch followed by
its mirror images (each image flipped left-right, ``x[..., ::-1]``), and returns for image i:

- ``embedding``: ``normalize((e(x_i) + e(mirror(x_i))) / 2)``, where ``e`` is the unit-length
  embedding the plain graph serves (so each view counts equally whatever its raw norm) and
  ``normalize`` divides by the L2 norm again (the output stays unit length, as the manifest
  says);
- ``attr_<name>``: the mean of the two views' probabilities (still a distribution);
- ``local``: per stripe, the mean of the two views' stripe features, re-normalised when the
  model's stripes are unit vectors (``local_normalise``; stripes are horizontal bands, which
  the mirror image keeps in place).

So an image and its mirror image get the same outputs. The service is unchanged: it sends
one batch of N and reads N rows; the 2N forward passes are the graph's own (about twice the
compute: ``python -m benchmarks.inference --part flip`` measures it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models import InferenceWrapper, ReidModel

WIDTH_AXIS = 3
"""Axis of the image width in the [N, 3, H, W] input."""


class FlipAveraged(nn.Module):
    """``InferenceWrapper``'s outputs averaged over each image and its mirror image."""

    def __init__(self, inner: InferenceWrapper) -> None:
        super().__init__()
        self.inner = inner
        self.eval()

    def train(self, mode: bool = True) -> FlipAveraged:
        """Stay in eval mode, as the wrapped :class:`InferenceWrapper` does."""
        return super().train(False)

    @property
    def output_names(self) -> list[str]:
        return self.inner.output_names

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        n = x.shape[0]
        both = self.inner(torch.cat([x, torch.flip(x, dims=[WIDTH_AXIS])], dim=0))
        averaged = []
        for name, out in zip(self.output_names, both, strict=True):
            mean = (out[:n] + out[n:]) * 0.5
            if name == "embedding":
                mean = nn.functional.normalize(mean, p=2.0, dim=1)  # [N, D]
            elif name == "local" and self.inner.model.local_normalise:
                mean = nn.functional.normalize(mean, p=2.0, dim=2)  # [N, H, c]
            averaged.append(mean)
        return tuple(averaged)


ExportedModule = InferenceWrapper | FlipAveraged
"""What :func:`exported_module` returns."""


def exported_module(
    model: ReidModel, include_local: bool = False, flip: bool = False
) -> ExportedModule:
    """The module whose outputs ``reid export`` writes: plain, or flip-averaged."""
    wrapper = InferenceWrapper(model, include_local=include_local)
    return FlipAveraged(wrapper) if flip else wrapper
