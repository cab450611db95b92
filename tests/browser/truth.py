"""What the page's own observers saw, turned into the numbers the agent must
report — each computed the way the web-vitals definitions (and the agent's
docs) say, so a test compares like with like."""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


def lcp(t: dict[str, Any]) -> Entry:
    return dict(t["entries"]["largest-contentful-paint"][-1])


def cls(t: dict[str, Any]) -> tuple[float, list[Entry]]:
    """CLS: the largest session window (gap < 1 s, span < 5 s) of shifts without recent input."""
    best: tuple[float, list[Entry]] = (0.0, [])
    value, window = 0.0, []
    for e in t["entries"]["layout-shift"]:
        if e["hadRecentInput"]:
            continue
        if (
            window
            and e["startTime"] - window[-1]["startTime"] < 1000
            and e["startTime"] - window[0]["startTime"] < 5000
        ):
            value += e["value"]
            window.append(e)
        else:
            value, window = e["value"], [e]
        if value > best[0]:
            best = (value, list(window))
    return best


def interactions(t: dict[str, Any], after: float = 0.0) -> dict[int, list[Entry]]:
    by_id: dict[int, list[Entry]] = {}
    for e in t["entries"]["event"]:
        if e["interactionId"] and e["startTime"] + e["duration"] >= after:
            by_id.setdefault(e["interactionId"], []).append(e)
    return by_id


def inp(t: dict[str, Any], after: float = 0.0) -> tuple[float, Entry]:
    """INP for a handful of interactions: the longest; and its first longest entry."""
    worst = max(interactions(t, after).values(), key=lambda es: max(e["duration"] for e in es))
    latency = max(e["duration"] for e in worst)
    first = min((e for e in worst if e["duration"] == latency), key=lambda e: e["startTime"])
    return latency, first


def inp_parts(t: dict[str, Any], first: Entry) -> dict[str, float]:
    """web-vitals' INP subparts: entries presented in the same frame (render
    times within 8 ms) form the group whose processing the interaction waited for."""
    render = first["startTime"] + first["duration"]
    group = [
        e
        for e in t["entries"]["event"]
        if e["duration"] >= 40 and abs(e["startTime"] + e["duration"] - render) <= 8
    ]
    next_paint = max(render, first["processingStart"])
    end = min(max(e["processingEnd"] for e in group), next_paint)
    return {
        "input_delay_ms": first["processingStart"] - first["startTime"],
        "processing_ms": end - first["processingStart"],
        "presentation_delay_ms": next_paint - end,
        "end": end,
    }


def longest_script(t: dict[str, Any], start: float, end: float) -> tuple[str, float]:
    """The LoAF script that overlaps [start, end] the most, and by how much."""
    best = ("", 0.0)
    for f in t["entries"]["long-animation-frame"]:
        if f["startTime"] + f["duration"] < start or f["startTime"] > end:
            continue
        for s in f["scripts"]:
            stop = s["startTime"] + s["duration"]
            if stop < start:
                continue
            overlap = stop - max(start, s["startTime"])
            if overlap > best[1]:
                best = (s["sourceURL"] or s["invoker"], overlap)
    return best


def long_tasks(tasks: list[Entry], frames: list[Entry]) -> dict[str, Any]:
    worst = max((s for f in frames for s in f["scripts"]), key=lambda s: s["duration"])
    return {
        "count": len(tasks),
        "total_ms": sum(e["duration"] for e in tasks),
        "tbt_ms": sum(max(0.0, e["duration"] - 50) for e in tasks),
        "max_ms": max(e["duration"] for e in tasks),
        "loaf_count": len(frames),
        "loaf_total_ms": sum(f["duration"] for f in frames),
        "worst_script": worst["sourceURL"] or worst["invoker"],
        "worst_script_ms": worst["duration"],
    }


def groups(
    resources: list[Entry], type_of: dict[str, str], origin: str
) -> dict[str, dict[str, Any]]:
    """Resource entries summed per type; ``type_of`` maps a URL path to its type."""
    out: dict[str, dict[str, Any]] = {}
    for r in resources:
        path = "/" + r["name"].split("/", 3)[3].split("?")[0]
        kind = type_of[path]
        g = out.setdefault(
            kind,
            {
                "type": kind,
                "count": 0,
                "transfer_bytes": 0,
                "encoded_bytes": 0,
                "decoded_bytes": 0,
                "duration_ms": 0.0,
                "cache_hits": 0,
                "render_blocking": 0,
                "third_party": 0,
            },
        )
        g["count"] += 1
        g["transfer_bytes"] += r["transferSize"]
        g["encoded_bytes"] += r["encodedBodySize"]
        g["decoded_bytes"] += r["decodedBodySize"]
        g["duration_ms"] += r["duration"]
        g["cache_hits"] += r["transferSize"] == 0 and r["decodedBodySize"] > 0
        g["render_blocking"] += r["renderBlockingStatus"] == "blocking"
        g["third_party"] += not r["name"].startswith(origin + "/")
    return out
