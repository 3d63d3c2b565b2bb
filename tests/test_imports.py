"""rrsis's own import graph stays clean: no cycle, no import of another module's private name, few
function-level imports of rrsis modules and each with its reason; the lazy family tables resolve."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from rrsis.train.recipes import FAMILIES, RECIPES

REPO = Path(__file__).resolve().parents[1]
# Each one is an import kept inside a function on purpose (torch or a job's own libraries, loaded only by the
# process that needs them); raise this only with such a reason next to the new import.
MOST_FUNCTION_LEVEL = 12


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_imports", REPO / "bench" / "imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _has_reason(path: Path, lineno: int) -> bool:
    """A comment on the import's line, or on the lines right above it (past other imports and blank lines)."""
    lines = path.read_text().splitlines()
    if "#" in lines[lineno - 1]:
        return True
    j = lineno - 2
    while j >= 0 and (not lines[j].strip() or lines[j].strip().startswith(("from ", "import "))):
        j -= 1
    return j >= 0 and lines[j].strip().startswith("#")


def test_no_cycles_no_private_imports_and_few_function_level_imports() -> None:
    audit = _audit()
    function_level, graph, every, private = audit.audit()
    assert audit.cycles(graph) == []
    assert audit.cycles(every) == []  # not even through an import inside a function
    assert private == []
    assert len(function_level) <= MOST_FUNCTION_LEVEL, "\n".join(function_level)
    missing = []
    for where in function_level:
        location = where.split(" ")[0]
        file, line = location.rsplit(":", 1)
        if not _has_reason(REPO / file, int(line)):
            missing.append(where)
    assert missing == [], f"function-level imports without a reason in a comment: {missing}"


def test_reason_check_can_fail(tmp_path: Path) -> None:
    bare = tmp_path / "m.py"
    bare.write_text("def f():\n    x = 1\n    from rrsis.errors import ConfigError\n")
    assert not _has_reason(bare, 3)
    bare.write_text("def f():\n    # why: torch\n    import torch\n\n    from rrsis.devices import resolve_device\n")
    assert _has_reason(bare, 5)


def test_every_family_recipe_resolves() -> None:
    assert FAMILIES == ("waterland", "danet", "grounding", "sam_decoder")
    for name, spec in RECIPES.items():
        module, _, function = spec.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_train_runner_imports_no_family_library() -> None:
    """`rrsis train` of one family loads only that family: the runner itself pulls in none of them."""
    heavy = ["transformers", "torchvision", "rrsis.models.danet.model", "rrsis.models.grounding.model",
             "rrsis.models.sam.build"]  # fmt: skip
    assert _imported("rrsis.train.run, rrsis.train.tune", heavy) == []


def _imported(modules: str, names: list[str]) -> list[str]:
    code = f"import sys, {modules}; print([m for m in {names!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return list(ast.literal_eval(out.stdout))


def test_map_workers_import_only_what_their_stage_needs() -> None:
    """The driver and the workers import the stage modules: torch stays in the model actors and OpenCV in the
    refine stages; each costs every process that imports it memory of its own. scikit-learn (with SciPy,
    ~85 MB) is imported by no map process: CFPG clusters with rrsis.refine.kmeans."""
    tile_task = "rrsis.cli, rrsis.pipeline.stages, rrsis.pipeline.build, rrsis.pipeline.run"
    assert _imported(tile_task, ["torch", "cv2", "sklearn"]) == []
    boxes_task = f"{tile_task}, rrsis.pipeline.run_boxes, rrsis.pipeline.task_boxes, rrsis.refine.cfpg"
    assert _imported(boxes_task, ["torch", "sklearn", "scipy"]) == []

    from rrsis.pipeline.refiners import clean_water_mask  # OpenCV on first use, with the same result

    prob = np.zeros((8, 8), dtype=np.float32)
    prob[2:5, 2:5] = 0.9
    prob[7, 7] = 0.9  # a 1-pixel speck under the mapping unit
    mask = clean_water_mask(prob, np.ones((8, 8), bool), threshold=0.5, open_px=0, min_mapping_unit_px=4)
    assert int(mask.sum()) == 9 and mask[7, 7] == 0
