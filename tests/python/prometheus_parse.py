"""Parses a metrics exposition with the official Prometheus client's parsers.

Run by tests/tests/metrics.rs:

    python prometheus_parse.py prometheus|openmetrics < BODY

reads the body of provd's `GET /metrics` on stdin, parses it with
`prometheus_client.parser.text_string_to_metric_families` (the Prometheus text format
0.0.4) or `prometheus_client.openmetrics.parser.text_string_to_metric_families`
(OpenMetrics 1.0, which also checks the `# EOF`, histogram and counter rules), and
writes every family as JSON on stdout: its name, type and samples (name, labels,
value). A body either parser refuses raises, and the script exits non-zero.
"""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as prometheus_families

parse = {"prometheus": prometheus_families, "openmetrics": openmetrics_families}[sys.argv[1]]
families = [
    {
        "name": family.name,
        "type": family.type,
        "samples": [
            {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
        ],
    }
    for family in parse(sys.stdin.read())
]
json.dump(families, sys.stdout)
