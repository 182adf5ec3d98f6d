#!/usr/bin/env python3
"""Parses Prometheus text exposition from stdin with prometheus-client's own
parser (text_string_to_metric_families) and prints the families as JSON:
[{"name", "type", "help", "samples": [{"name", "labels", "value"}]}].
A text the parser refuses exits non-zero with its error."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    families = []
    for f in text_string_to_metric_families(sys.stdin.read()):
        families.append({
            "name": f.name,
            "type": f.type,
            "help": f.documentation,
            "samples": [
                {"name": s.name, "labels": dict(s.labels), "value": s.value}
                for s in f.samples
            ],
        })
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
