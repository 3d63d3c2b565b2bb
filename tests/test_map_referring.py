"""`task: referring` end to end on real Ray: tiny grounding checkpoint + tiny SAM on the Landsat scene."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.config.load import load_config
from rrsis.config.map import MapConfig
from rrsis.errors import InputError
from rrsis.models.config import ModelConfig
from rrsis.models.grounding.config import tiny_grounding_config
from rrsis.models.grounding.model import GroundingModel
from rrsis.pipeline.run import run_map

REPO = Path(__file__).resolve().parents[1]
TINY = tiny_grounding_config(max_query_tokens=12)


def grounding_checkpoint(path: Path) -> Path:
    mc = ModelConfig(name="grounding", grounding=TINY)
    save_checkpoint(
        checkpoint_from_model(GroundingModel(TINY), mc, bands=["r", "g", "b"], norm_mean=[0.0] * 3, norm_std=[1.0] * 3),
        str(path),
    )
    return path


def config(tmp_path: Path, ckpt: Path, query: str) -> MapConfig:
    overrides = [
        f"output={tmp_path / 'out'}",
        f"referring.checkpoint={ckpt}",
        f"query={query}",
        "referring.min_score=0.0",
        "tiling.tile_px=400",
        "tiling.overlap_px=40",
        "boxes.sam.model_type=tiny",
        "infer.device=cpu",
        "infer.torch_threads=1",
    ]
    return load_config(MapConfig, REPO / "configs" / "map" / "referring.yaml", overrides)


@pytest.mark.slow
def test_map_referring_writes_polygons_carrying_the_query(samples: Path, tmp_path: Path, ray_session: None) -> None:
    ckpt = grounding_checkpoint(tmp_path / "g.pt")
    cfg = config(tmp_path, ckpt, "the bright clouds")
    assert run_map(cfg) == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    boxes = (run_dir / "RGB.byte" / "query_boxes.csv").read_text().splitlines()
    assert boxes[0] == "id,x1,y1,x2,y2"
    n = len(boxes) - 1
    assert 1 <= n <= 4  # 791 x 718 scene, 400 px tiles: 2 x 2 tiles, at most one box each, NMS may merge
    vectors = json.loads((run_dir / "RGB.byte" / "boxes.geojson").read_text())
    assert len(vectors["features"]) == n
    assert (run_dir / "RGB.byte" / "quicklook.png").read_bytes()[:4] == b"\x89PNG"
    for f in vectors["features"]:
        assert f["properties"]["query"] == "the bright clouds"
        assert 0.0 <= f["properties"]["score"] <= 1.0
    manifest = pq.read_table(io.BytesIO((run_dir / "manifest.parquet").read_bytes())).to_pylist()
    assert len(manifest) == n and {r["status"] for r in manifest} == {"written"}
    assert (run_dir / "RGB.byte" / "mosaic.tif").exists()
    # both phases committed the scene (grounding's books under grounding/): a rerun skips both, unread
    assert (run_dir / "grounding" / "_commits" / "RGB.byte.json").exists()
    assert (run_dir / "_commits" / "RGB.byte.json").exists()
    before = (run_dir / "RGB.byte" / "boxes.geojson").read_bytes()
    cfg.run_id = run_dir.name
    assert run_map(cfg) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["scenes_resumed"], summary["grounding_scenes_resumed"], summary["boxes_computed"]) == (1, 1, 0)
    assert summary["boxes"] == n and summary["scenes_ok"] == 1
    assert (run_dir / "RGB.byte" / "boxes.geojson").read_bytes() == before


def test_map_referring_refuses_empty_and_overlong_queries(tmp_path: Path) -> None:
    ckpt = grounding_checkpoint(tmp_path / "g.pt")
    with pytest.raises(InputError, match="query is empty"):
        run_map(config(tmp_path, ckpt, "' '"))
    with pytest.raises(InputError, match="tokens, the grounding model reads at most 12"):
        run_map(config(tmp_path, ckpt, "a very long query " * 4))
