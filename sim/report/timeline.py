"""Chrome trace-event JSON (opens in Perfetto): one process per resource kind, one thread per resource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arch.safeio import write_text


def write_chrome_trace(timeline: Any, engine: Any, path: str | Path) -> None:
    kinds = {"tile": 1, "local_digital": 2, "simd": 3, "link": 4, "dram": 5}
    names = {1: "analog tiles", 2: "local digital units", 3: "SIMD cores", 4: "NoC links", 5: "DRAM"}
    tids: dict[str, tuple[int, int]] = {}
    events: list[dict[str, Any]] = []
    for pid, name in names.items():
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
    for resource, start, end, label in timeline.records:
        if resource not in tids:
            pid = kinds[resource.split(" ")[0]]
            tids[resource] = (pid, len(tids) + 1)
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tids[resource][1],
                           "args": {"name": resource}})
        pid, tid = tids[resource]
        events.append({"ph": "X", "name": label or resource, "cat": resource.split(" ")[0], "pid": pid, "tid": tid,
                       "ts": start / 1e6, "dur": (end - start) / 1e6})
    write_text(Path(path), json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}))
