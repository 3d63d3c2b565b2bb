"""PSLG-SAM refinement (pure numpy / OpenCV): CFPG point prompts (`rrsis.refine.cfpg`, clustering with
`rrsis.refine.kmeans`), MBO GrabCut boundaries (`rrsis.refine.mbo`), their configs (`rrsis.refine.config`).

Nothing is imported here: model configs import `rrsis.refine.config`, and importing this package must not
pull in OpenCV in every process that only loads a checkpoint.
"""
