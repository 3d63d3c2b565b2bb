"""PSLG-SAM refinement (pure numpy / OpenCV / scikit-learn): CFPG point prompts, MBO GrabCut boundaries."""

from rrsis.refine.cfpg import CfpgResult, cfpg_point, cfpg_points
from rrsis.refine.config import CfpgConfig, MboConfig
from rrsis.refine.mbo import MboResult, mbo_refine

__all__ = ["CfpgConfig", "CfpgResult", "MboConfig", "MboResult", "cfpg_point", "cfpg_points", "mbo_refine"]
