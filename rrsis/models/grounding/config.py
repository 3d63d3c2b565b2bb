"""Typed config of the grounding model family (pure dataclass): PSLG-SAM stage one (paper sec. 3.1, 4.2).

Defaults follow the paper: ResNet-50 image encoder, a BERT-family text encoder, AdamW with lr 1e-5 for the
text encoder and 1e-4 for the rest (the optimiser lives in the train config). Input size, widths and query
count follow LQVG/TransVG practice (640 px, 256-wide, 6 decoder layers); they are our choice where the
paper is silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.errors import ConfigError
from rrsis.fields import bounded, choice

IMAGE_ENCODERS = ("resnet50", "resnet50", "resnet18", "tiny")  # tiny: torchvision ResNet(BasicBlock, [1,1,1,1])


@dataclass
class GroundingConfig:
    image_encoder: str = choice(*IMAGE_ENCODERS)
    image_weights: str = "none"  # torchvision ResNet state dict (.pth) from the user; "none" = random init
    text_encoder: str = ""  # BERT-family model directory; empty: the offline all-MiniLM-L6-v2 package
    text_trainable: bool = True  # the paper fine-tunes the text encoder at lr 1e-5
    image_size_px: int = bounded(640, 32, 4096)  # square input; boxes are normalised to the original image
    max_query_tokens: int = bounded(40, 2, 512)  # DIOR-RSVG expressions are short; MGVLF pads to 40
    hidden_dim: int = bounded(256, 8)
    num_heads: int = bounded(8, 1)
    decoder_layers: int = bounded(6, 1, 24)
    ffn_dim: int = bounded(1024, 8)
    num_queries: int = bounded(10, 1, 300)  # LQVG-style language-guided queries; the best-scored one wins
    dropout: float = bounded(0.1, 0.0, 1.0, open_high=True)
    l1_weight: float = bounded(1.0, 0.0)  # loss = l1_weight * L1 + giou_weight * (1 - GIoU) + score_weight * BCE
    giou_weight: float = bounded(1.0, 0.0)
    score_weight: float = bounded(1.0, 0.0)
    pixel_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # ImageNet, 0-1 RGB
    pixel_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    seed: int = 0  # random init of everything not loaded from weights

    def validate(self, prefix: str = "") -> None:
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"config error: key '{prefix}hidden_dim': {self.hidden_dim} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        for key in ("pixel_mean", "pixel_std"):
            if len(getattr(self, key)) != 3:
                raise ConfigError(f"config error: key '{prefix}{key}': needs 3 values (RGB)")


def tiny_grounding_config(**overrides: object) -> GroundingConfig:
    """A seconds-fast grounding model of the real classes, for tests, benchmarks and smoke runs."""
    values: dict[str, object] = {
        "image_encoder": "tiny",
        "image_size_px": 64,
        "hidden_dim": 32,
        "num_heads": 2,
        "decoder_layers": 1,
        "ffn_dim": 64,
        "num_queries": 2,
        "dropout": 0.0,
    }
    values.update(overrides)
    return GroundingConfig(**values)  # type: ignore[arg-type]
