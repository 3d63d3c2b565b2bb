"""PSLG-SAM refinement (pure numpy / OpenCV / scikit-learn): CFPG point prompts (`rrsis.refine.cfpg`), MBO
GrabCut boundaries (`rrsis.refine.mbo`), their configs (`rrsis.refine.config`).

Nothing is imported here: model configs import `rrsis.refine.config`, and importing this package must not
pull in scikit-learn and OpenCV (1.5 s and ~65 MB in every process that only loads a checkpoint).
"""
