"""``python -m benchmarks.scale '<json>'``: one scale cell in this (fresh) process; prints its figures as JSON."""

from __future__ import annotations

import json
import sys

from benchmarks.scale.measure import measure_in_process

if __name__ == "__main__":
  print(json.dumps(measure_in_process(**json.loads(sys.argv[1]))))
