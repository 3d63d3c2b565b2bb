"""One device rule for train, tune, eval: auto picks CUDA only when present; CUDA asked without it is one line,
exit 2, never a silent fall back to the CPU."""

from __future__ import annotations

import pytest
import torch

from rrsis.cli import main
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError

NO_CUDA = not torch.cuda.is_available()


def test_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device(name)


def test_not_a_device_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"key 'infer\.device'"):
        resolve_device("gpu", key="infer.device")


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "-c", "configs/train/grounding_tiny.yaml", "device=cuda"],
        ["train", "-c", "configs/train/sam_decoder_tiny.yaml", "device=cuda:1"],
        ["train", "-c", "configs/train/waterland_tiny.yaml", "device=cuda", "train.enabled=true"],
        ["eval", "device=cuda"],
        ["tune", "-c", "configs/tune/waterland_tiny.yaml", "base.device=cuda"],
    ],
)
def test_cli_cuda_without_cuda_is_one_line_exit_2(
    argv: list[str], tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, f"output={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0], err
