"""`rrsis eval` on referring fixture splits: PSLG-SAM (masks + boxes) and a trained grounding checkpoint."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from rrsis.checkpoints import build_from_checkpoint, checkpoint_from_model, load_checkpoint, save_checkpoint
from rrsis.cli import main
from rrsis.data.referring import load_image, load_mask, load_referring_split
from rrsis.evaluate.referring import predict_referring
from rrsis.metrics.referring import ReferringMeter
from rrsis.models.config import ModelConfig
from rrsis.models.grounding.config import tiny_grounding_config
from rrsis.models.pslg_sam import PslgSam
from rrsis.models.sam.config import SamConfig

TINY_GROUNDING = tiny_grounding_config()


def refer_split(root: Path) -> Path:
    """Three 48x48 scenes, each with one square object (polygon) and one expression, RRSIS-D layout."""
    rng = np.random.default_rng(3)
    images, anns, refs = [], [], []
    for i, (x, y, s) in enumerate([(8, 8, 16), (20, 12, 20), (4, 26, 14)]):
        img = rng.integers(30, 80, (48, 48, 3), dtype=np.uint8)
        img[y : y + s, x : x + s] = (220, 210, 50)
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 48, "width": 48})
        poly = [x, y, x + s, y, x + s, y + s, x, y + s]
        anns.append(
            {"id": 100 + i, "image_id": i, "category_id": 1 + i % 2, "bbox": [x, y, s, s], "segmentation": [poly]}
        )
        refs.append(
            {
                "ref_id": i,
                "image_id": i,
                "ann_id": 100 + i,
                "split": "test",
                "category_id": 1 + i % 2,
                "sentences": [{"sent_id": i, "sent": f"the yellow square number {i}"}],
            }
        )
    cats = [{"id": 1, "name": "storagetank"}, {"id": 2, "name": "vehicle"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


@pytest.mark.slow
def test_eval_pslg_sam_writes_metrics_csv_panels(tmp_path: Path) -> None:
    root = refer_split(tmp_path / "rrsisd")
    model_cfg = ModelConfig(name="pslg_sam", grounding=TINY_GROUNDING, sam=SamConfig(model_type="tiny"))
    model = PslgSam(model_cfg.grounding, model_cfg.sam)
    ckpt_path = tmp_path / "pslg.pt"
    save_checkpoint(
        checkpoint_from_model(
            model, model_cfg, bands=["red", "green", "blue"], norm_mean=[0.0] * 3, norm_std=[1.0] * 3
        ),
        str(ckpt_path),
    )
    out = tmp_path / "eval"
    rc = main(
        [
            "eval",
            f"checkpoint={ckpt_path}",
            "data.format=refer",
            f"data.root={root}",
            "split=test",
            f"output={out}",
            "panels=1",
            "batch_size=2",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert metrics["model"] == "pslg_sam" and metrics["n"] == 3 and len(rows) == 3
    assert sorted(p.name.split("_")[0] for p in (out / "panels").glob("*.png")) == ["best", "worst"]
    panel = cv2.imread(str(next((out / "panels").glob("best_*.png"))))
    assert panel.shape[1] == 3 * 48 + 2 * 4  # image | predicted mask | ground truth
    # the CSV's per-sample I and U reproduce the JSON (oIoU = ΣI / ΣU, mIoU = mean IoU)
    inter = [int(r["inter_px"]) for r in rows]
    union = [int(r["union_px"]) for r in rows]
    assert metrics["oiou"] == pytest.approx(sum(inter) / sum(union) if sum(union) else 0.0)
    assert metrics["miou"] == pytest.approx(np.mean([float(r["iou"]) for r in rows]))
    # and an independent pass through the model + metric functions gives the same numbers
    rebuilt = build_from_checkpoint(load_checkpoint(str(ckpt_path)))
    samples = load_referring_split(
        type("D", (), {"format": "refer", "root": str(root), "image_dir": "", "split_file": ""})(), "test"
    )
    meter = ReferringMeter()
    for s in samples:
        img = load_image(s)
        (pred,) = predict_referring(rebuilt, [img], [s.text])
        meter.add(
            s.sample_id, s.category, pred.mask, load_mask(s, img.shape[:2]), pred.box_xyxy, np.asarray(s.box_xyxy)
        )
    want = meter.summary()
    for key in ("miou", "oiou", "pr@0.5", "pr@0.9", "box_acc@0.5", "box_miou", "category_miou"):
        assert metrics[key] == pytest.approx(want[key]), key
    assert set(metrics["per_category"]) == {"storagetank", "vehicle"}


@pytest.mark.slow
def test_train_grounding_then_eval_boxes(tmp_path: Path) -> None:
    from rrsis.config.load import load_config
    from rrsis.config.train import TrainConfig
    from rrsis.train.run import run_train

    root = tmp_path / "rsvg"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(3):
        img = np.full((40, 40, 3), 60 + 40 * i, np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / f"{i:05d}.jpg"), img)
        (root / "Annotations" / f"{i:05d}.xml").write_text(
            f"<annotation><filename>{i:05d}.jpg</filename><size><width>40</width><height>40</height></size>"
            f"<object><name>ship</name><bndbox><xmin>{2 + i}</xmin><ymin>4</ymin><xmax>30</xmax><ymax>36</ymax>"
            f"</bndbox><description>the ship {i}</description></object></annotation>"
        )
    (root / "train.txt").write_text("0\n1\n")
    (root / "test.txt").write_text("2\n")
    overrides = [
        "model.name=grounding",
        "data.format=dior_rsvg",
        f"data.root={root}",
        f"output={tmp_path / 'runs'}",
        "run_name=g",
        "optim.epochs=1",
        "optim.batch_size=2",
        "optim.lr=1e-4",
        "optim.lr_text=0.0",
        "optim.warmup_epochs=1",
        "optim.lr_decay_epochs=[1]",
        *[f"model.grounding.{k}={v}" for k, v in vars(TINY_GROUNDING).items() if isinstance(v, (int, float))],
    ]
    cfg = load_config(TrainConfig, None, overrides)
    assert run_train(cfg) == 0
    run = tmp_path / "runs" / "g"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "train_giou" in json.loads(lines[0])
    ckpt = load_checkpoint(str(run / "best.pt"))
    assert ckpt.model_name == "grounding" and ckpt.model_config["grounding"]["image_weights"] == "none"
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                f"checkpoint={run / 'best.pt'}",
                "data.format=dior_rsvg",
                f"data.root={root}",
                "split=test",
                f"output={out}",
                "panels=1",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_boxes"] == 1 and "miou" not in metrics
    row = next(csv.DictReader((out / "samples.csv").open()))
    assert metrics["box_miou"] == pytest.approx(float(row["box_iou"]))
    assert metrics["box_acc@0.5"] == (1.0 if float(row["box_iou"]) >= 0.5 else 0.0)
    # the same grounding checkpoint composed with a tiny SAM is PSLG-SAM: same boxes, plus masks
    out_sam = tmp_path / "eval_sam"
    argv = [
        "eval",
        f"checkpoint={run / 'best.pt'}",
        "data.format=dior_rsvg",
        f"data.root={root}",
        "split=test",
        f"output={out_sam}",
        "panels=0",
        "with_sam=true",
        "sam.model_type=tiny",
    ]
    assert main(argv) == 0
    with_sam = json.loads((out_sam / "metrics.json").read_text())
    assert with_sam["model"] == "pslg_sam"
    assert with_sam["box_miou"] == pytest.approx(metrics["box_miou"])
    assert "mask_score" in next(csv.DictReader((out_sam / "samples.csv").open()))
