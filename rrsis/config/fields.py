"""The field helpers live in `rrsis.fields` (model, refine and job configs all import them from there, so
`rrsis.config` and `rrsis.models` do not import each other); this name stays for existing imports."""

from rrsis.fields import DEVICES, bounded, choice, describe_range, device, in_range, items

__all__ = ["DEVICES", "bounded", "choice", "describe_range", "device", "in_range", "items"]
