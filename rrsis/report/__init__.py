"""The run report: `report.html`, a STAC catalog and a GeoParquet polygon dataset beside a run's outputs.

`build_report(run_uri)` reads only the run's own files (local or s3://) and can be rerun at any time.
"""

from rrsis.report.build import build_report
from rrsis.report.stac import validate_catalog

__all__ = ["build_report", "validate_catalog"]
