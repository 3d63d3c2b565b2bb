"""`WaterlandNet`: one of the three trunks plus 1 + aux_heads 1x1 output layers, for any H, W.

Widths: `WaterlandConfig.width` ("full" or "half") picks the base channel count c of Table I for the family
(SeNet 32/16, DeepUNet 32/16, MU-Net 64/32); every layer width is a multiple of c, so the half variant has
about a quarter of the parameters. Inputs are replicate-padded to the trunk's stride and outputs cropped back.
The paper adds one output layer per extra loss term (eq. 3 and 6): head 0 is the segmentation used at
inference, head k carries the k-th term of the loss (see `rrsis.losses`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.models.waterland.blocks import Trunk, pad_to_multiple
from rrsis.models.waterland.config import WaterlandConfig
from rrsis.models.waterland.deepunet import DeepUNetTrunk
from rrsis.models.waterland.munet import MUNetTrunk
from rrsis.models.waterland.senet import SeNetTrunk

TrunkBuilder = Callable[[int, int], Trunk]

# family -> (trunk class, {width: base channel count c}) from Table I of the water/land paper.
FAMILIES: dict[str, tuple[TrunkBuilder, dict[str, int]]] = {
    "senet": (SeNetTrunk, {"full": 32, "half": 16}),
    "deepunet": (DeepUNetTrunk, {"full": 32, "half": 16}),
    "munet": (MUNetTrunk, {"full": 64, "half": 32}),
}


def base_width(family: str, width: str) -> int:
    """Base channel count c of a family at a width ("full" / "half"); ModelError names the allowed values."""
    if family not in FAMILIES:
        raise ModelError(f"model.waterland.family={family!r} is not one of {sorted(FAMILIES)}")
    widths = FAMILIES[family][1]
    if width not in widths:
        raise ModelError(f"model.waterland.width={width!r} is not one of {sorted(widths)}")
    return widths[width]


class WaterlandNet(nn.Module):
    """(B, in_bands, H, W) -> logits (B, num_classes, H, W); class 1 = water in rrsis data."""

    def __init__(self, cfg: WaterlandConfig) -> None:
        super().__init__()
        base = base_width(cfg.family, cfg.width)
        if cfg.in_bands < 1:
            raise ModelError(f"model.waterland.in_bands={cfg.in_bands} must be at least 1")
        if cfg.aux_heads < 0:
            raise ModelError(f"model.waterland.aux_heads={cfg.aux_heads} must be 0 or more")
        self.cfg = cfg
        self.trunk: Trunk = FAMILIES[cfg.family][0](cfg.in_bands, base)
        self.stride = self.trunk.stride
        features = self.trunk.out_channels
        self.heads = nn.ModuleList(nn.Conv2d(features, cfg.num_classes, 1) for _ in range(1 + cfg.aux_heads))

    def _features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_bands:
            raise ModelError(
                f"waterland model expects (B, {self.cfg.in_bands}, H, W) input "
                f"(model.waterland.in_bands), got shape {tuple(x.shape)}"
            )
        return self.trunk(pad_to_multiple(x, self.stride))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.heads[0](self._features(x))[..., :h, :w]

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        """Main head first, then the auxiliary heads (one per extra loss term)."""
        h, w = x.shape[-2:]
        features = self._features(x)
        return [head(features)[..., :h, :w] for head in self.heads]
