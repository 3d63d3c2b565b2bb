"""Shapes of the six water-land variants (3 families x full/half) on odd sizes; parameter counts; registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rrsis.errors import ModelError
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model, register_model, registered_models
from rrsis.models.waterland.blocks import count_parameters
from rrsis.models.waterland.config import WaterlandConfig
from rrsis.models.waterland.net import FAMILIES, WaterlandNet

FAMILY_NAMES = sorted(FAMILIES)


def waterland(family: str, width: str, in_bands: int = 4, aux_heads: int = 0) -> nn.Module:
    cfg = ModelConfig(name="waterland")
    cfg.waterland = WaterlandConfig(family=family, width=width, in_bands=in_bands, aux_heads=aux_heads)
    return build_model(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_full_and_half_shapes_on_odd_sizes_and_parameter_ratio(family: str) -> None:
    torch.manual_seed(0)
    counts = {}
    for width, (bands, h, w) in {"full": (4, 19, 23), "half": (2, 21, 9)}.items():
        model = waterland(family, width, in_bands=bands, aux_heads=1).eval()
        counts[width] = count_parameters(model)
        x = torch.randn(1, bands, h, w)
        with torch.no_grad():
            heads = model.forward_heads(x)
            main = model(x)
        assert [tuple(t.shape) for t in heads] == [(1, 2, h, w), (1, 2, h, w)]
        assert torch.allclose(heads[0], main, atol=1e-5)
        assert torch.isfinite(main).all()
        with torch.no_grad():
            assert model(x[..., :1, :1]).shape == (1, 2, 1, 1)  # padded to the stride, cropped back
    ratio = counts["full"] / counts["half"]
    print(f"{family}: full {counts['full']:,} params, half {counts['half']:,} params, ratio {ratio:.2f}")
    assert 3.5 < ratio < 4.5


def test_bad_configs_and_inputs_fail_with_one_clear_line() -> None:
    with pytest.raises(ModelError, match=r"model.waterland.family='unet'"):
        WaterlandNet(WaterlandConfig(family="unet"))
    with pytest.raises(ModelError, match=r"model.waterland.width='quarter'"):
        WaterlandNet(WaterlandConfig(width="quarter"))
    model = waterland("deepunet", "half", in_bands=4)
    with pytest.raises(ModelError, match=r"expects \(B, 4, H, W\).*got shape \(1, 2, 8, 8\)"):
        model(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ModelError, match=r"model.name='nope' has no builder; registered: .*waterland"):
        build_model(ModelConfig(name="nope"))


def test_register_model_adds_a_builder() -> None:
    @register_model("test_identity")
    def build_identity(cfg: ModelConfig) -> nn.Module:
        return nn.Identity()

    assert "test_identity" in registered_models()
    assert isinstance(build_model(ModelConfig(name="test_identity")), nn.Identity)
    with pytest.raises(ModelError, match="registered twice"):
        register_model("test_identity")(lambda cfg: nn.Identity())
