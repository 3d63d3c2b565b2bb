"""The run report: `report.html` beside every run's outputs (map, train, tune, eval); for map runs also a
STAC catalog and a GeoParquet polygon dataset.

`build_report(run_uri)` reads only the run's own files (local or s3://) and can be rerun at any time;
`report_run` is the same for the end of a job (a failure is a warning, not a failed job).
"""

from rrsis.report.build import build_report, report_run, run_kind
from rrsis.report.stac import validate_catalog

__all__ = ["build_report", "report_run", "run_kind", "validate_catalog"]
