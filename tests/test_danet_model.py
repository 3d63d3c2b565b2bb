"""DANet as a whole: F2 parameter accounting, where L_affinity's gradients go, config errors (exit 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rrsis.cli import main
from rrsis.losses.danet import affinity_loss
from rrsis.models.config import ModelConfig
from rrsis.models.danet.decoder import FixedKernelHead
from rrsis.models.danet.model import Danet, build_danet
from rrsis.models.danet.text import load_tokenizer, tokenize
from rrsis.models.registry import build_model
from tests.danet_tiny import tiny_danet_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The CI machine has 2 shared cores; one intra-op thread is several times faster there."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_f2_parameter_accounting() -> None:
    torch.manual_seed(0)
    lavt = build_danet(tiny_danet_config(eaas=False, raam=False))
    eaas = build_danet(tiny_danet_config(eaas=True, raam=False))
    full = build_danet(tiny_danet_config(eaas=True, raam=True))
    # EAAS adds no learnable parameter (the paper's claim).
    assert _count(lavt) == _count(eaas)
    assert full.raam is not None and full.head is None and eaas.head is not None
    # RAAM's own parameters, counted from the widths: C = 128 (tiny stage 4), C_t = 384 (MiniLM),
    # C_k = 16, C_v = 32, FFN 48. Bias-free W^Q, W^Qg (C_t x C_k), W^K, W^Qp (C x C_k), W^V (C x C_v);
    # self-attention 4 C_v^2 + 4 C_v; two LayerNorms 4 C_v; FFN C_v*48 + 48 + 48*C_v + C_v.
    c, ct, ck, cv, f = 128, 384, 16, 32, 48
    raam_params = 2 * ct * ck + 2 * c * ck + c * cv + (4 * cv * cv + 4 * cv) + 4 * cv + (cv * f + f + f * cv + cv)
    assert _count(full.raam) == raam_params
    # With RAAM, the difference is exactly RAAM's parameters minus the fixed 1x1 kernel (C_v + 1) it replaces.
    assert _count(FixedKernelHead(cv)) == cv + 1
    assert _count(full) - _count(eaas) == raam_params - (cv + 1)
    # every other parameter is shared name by name with the same shape
    lavt_shapes = {k: v.shape for k, v in lavt.named_parameters() if not k.startswith("head.")}
    full_shapes = {k: v.shape for k, v in full.named_parameters() if not k.startswith("raam.")}
    assert lavt_shapes == full_shapes


def _forward(model: Danet) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    ids, mask = tokenize(load_tokenizer(), ["the river", "the field on the left"], 8)
    model.train()
    out = model(torch.randn(2, 3, 64, 64), ids, mask)
    return out.logits, out.affinity_features, out.affinity_labels


def _grad_sum(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("stages", [[2], [3, 4]])
def test_affinity_gradients_reach_only_the_stages_it_constrains(stages: list[int]) -> None:
    torch.manual_seed(0)
    model = build_danet(tiny_danet_config(affinity_stages=stages))
    _, feats, labels = _forward(model)
    assert len(feats) == len(stages) and all(lab.sum() > 0 for lab in labels)
    sum(affinity_loss(f, lab).mean() for f, lab in zip(feats, labels, strict=True)).backward()  # type: ignore[union-attr]
    last = max(stages)  # F_last depends on stages 1..last (blocks, PWAM, gate, norm) and the text encoder
    enc = model.encoder
    for i in range(4):
        reached = _grad_sum(enc.backbone.stages[i].blocks) + _grad_sum(enc.pwams[i]) + _grad_sum(enc.gates[i])
        assert (reached > 0) == (i < last), f"stage {i + 1}"
        assert (_grad_sum(enc.norms[i]) > 0) == (i + 1 in stages), f"norm of stage {i + 1}"
    assert _grad_sum(model.text) > 0
    assert _grad_sum(enc.backbone.stages[last - 1].downsample or torch.nn.Identity()) == 0  # F_i is pre-merging
    assert _grad_sum(model.decoder) == 0
    assert model.raam is not None and _grad_sum(model.raam) == 0


def test_eval_mode_skips_eaas_and_registry_builds_danet() -> None:
    cfg = ModelConfig(name="danet", danet=tiny_danet_config(text_trainable=False))
    model = build_model(cfg)
    assert isinstance(model, Danet)
    model.train()  # a frozen text encoder has no trainable weights and stays in eval mode (no dropout)
    assert model.decoder.training and not model.text.bert.training
    assert not any(p.requires_grad for p in model.text.parameters())
    ids, mask = tokenize(load_tokenizer(), ["the water"], 8)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), ids, mask)
    assert out.logits.shape == (1, 1, 64, 64) and out.affinity_features == []


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.danet.alpha=1.5", "model.danet.alpha"),
        ("model.danet.alpha=0.0", "model.danet.alpha"),
        ("model.danet.alpha=1.0", "model.danet.alpha"),
        ("model.danet.k=0", "model.danet.k"),
        ("model.danet.agent_mode=attention", "model.danet.agent_mode"),
        ("model.danet.affinity_stages=[0,2]", "model.danet.affinity_stages"),
        ("model.danet.num_heads=3", "model.danet.num_heads"),
    ],
)
def test_bad_danet_config_exits_2_naming_the_key(override: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "train", "model.name=danet", override]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and len(err.strip().splitlines()) == 1


def test_paper_configs_load(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("danet_rrsisd", "danet_refsegrs", "danet_tiny"):
        assert main(["config", "show", "train", "-c", str(CONFIGS / f"{name}.yaml")]) == 0
        shown = capsys.readouterr().out
        assert "name: danet" in shown
    assert main(["config", "show", "train", "-c", str(CONFIGS / "danet_rrsisd.yaml")]) == 0
    shown = capsys.readouterr().out
    for line in ("lr: 0.0005", "batch_size: 16", "alpha: 0.8", "k: 32", "lambda_af: 0.5", "input_px: 480"):
        assert line in shown
