"""Config loading and CLI error handling: one clear line and exit code 2 for every user mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rrsis.cli import main
from rrsis.config.jobs import JOBS, schema_for
from rrsis.config.load import load_config, to_yaml
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_job_schema_loads_with_defaults() -> None:
    for job in JOBS:
        cfg = load_config(schema_for(job))
        assert to_yaml(cfg).strip()


def test_override_and_file_layers(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("tiling:\n  tile_px: 256\n  overlap_px: 32\n")
    cfg = load_config(MapConfig, f, ["tiling.overlap_px=16", "input=[a.tif,b.tif]"])
    assert cfg.tiling.tile_px == 256
    assert cfg.tiling.overlap_px == 16
    assert cfg.input == ["a.tif", "b.tif"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["config", "show", "map", "tiling.tile_pix=3"], "unknown key 'tiling.tile_pix'; allowed keys here: tile_px"),
        (["config", "show", "map", "tiling.tile_px=abc"], "key 'tiling.tile_px'"),
        (["config", "show", "map", "tiling.blend=linear"], "value 'linear' is not allowed; allowed: 'crop'"),
        (["config", "show", "map", "tiling.overlap_px=512"], "must be smaller than tiling.tile_px"),
        (["config", "show", "train", "optim.lr=-1"], "key 'optim.lr': value -1.0 is out of range"),
        (["config", "show", "map", "--config", "does/not/exist.yaml"], "file not found: does/not/exist.yaml"),
        (["config", "show", "map", "tiling"], "must look like key.sub=value"),
        (["config", "show", "map", "resume=maybe"], "'resume' expects true or false, got 'maybe'; e.g. resume=true"),
        (["config", "show", "map", "tiling=3"], "'tiling' expects a section of keys, got 3; e.g. tiling.tile_px=512"),
        (["config", "show", "map", "input={a: 1}"], "key 'input' expects a list, got {'a': 1}; e.g. input=["),
        (["config", "show", "map", "infer.threshold=[1,2]"], "key 'infer.threshold' expects a number, got [1, 2]"),
        (["config", "show", "map", "input=[a.tif"], "override 'input=[a.tif' cannot be parsed"),
        (["config", "show", "map", "tiling.tile_px=${oc.env:RRSIS_UNSET_VAR}"], "RRSIS_UNSET_VAR"),
        (["config", "show", "train", "optim.lr_decay_epochs=[x]"], "key 'optim.lr_decay_epochs"),
        (["config", "show", "tune", "base.optim.lr=x"], "key 'base.optim.lr' expects a number, got 'x'"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, _out, err = _run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_scalar_for_a_list_key_is_a_one_item_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scene = "data/samples/sen1floods11/S1Hand/Spain_7370579_S1Hand.tif"
    argv = ["config", "show", "map", "--config", str(REPO / "configs/map/waterland.yaml"), f"input={scene}"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert yaml.safe_load(out)["input"] == [scene]
    cfg = load_config(MapConfig, None, ["bands=VV", "input=s3://bucket/scenes/"])
    assert cfg.bands == ["VV"] and cfg.input == ["s3://bucket/scenes/"]
    assert load_config(MapConfig, None, ["bands="]).bands == []  # an empty value clears a list
    f = tmp_path / "t.yaml"
    f.write_text("optim:\n  lr_decay_epochs: 5\ndata:\n  bands: VV\n")  # the same in a YAML file
    train = load_config(schema_for("train"), f)
    assert train.optim.lr_decay_epochs == [5] and train.data.bands == ["VV"]
    tune = load_config(schema_for("tune"), None, ["base.data.val_events=Spain"])
    assert tune.base.data.val_events == ["Spain"]


def test_debug_flag_shows_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError):
        main(["--debug", "config", "show", "map", "nope=1"])


def test_invalid_yaml_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("tiling: [unclosed\n")
    code, _, err = _run(capsys, "config", "show", "map", "--config", str(f))
    assert code == 2 and "bad.yaml" in err and "not valid YAML" in err


def test_shipped_configs_all_load() -> None:
    files = sorted((REPO / "configs").rglob("*.yaml"))
    for f in files:
        job = f.parent.name
        if job in JOBS and not f.name.startswith("space_"):
            load_config(schema_for(job), f)


def test_help_lists_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for job in ("map", "train", "tune", "eval", "submit", "jobs"):
        assert job in out
