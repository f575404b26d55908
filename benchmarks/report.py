"""Figures from the raw runs: ratios, geometric means, tables and a chart."""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any

#: the targets (geometric-mean wall overhead): pysampler in CPU mode, and
#: importing it without profiling (within noise of no profiler)
TARGETS = {"pysampler-cpu-100": 0.01, "pysampler-cpu-1000": 0.03, "pysampler-import": 0.01}
#: the configuration that imports pysampler and does nothing else: the
#: baseline of "sampling cost" (a session's cost beyond the import's)
IMPORT_ONLY = "pysampler-import"


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def analyse(data: dict[str, Any]) -> None:
    """Add ``results`` (per workload and config), ``summary`` (per config) and
    ``micro_summary`` to ``data``."""
    runs = [r for r in data["runs"] if "error" not in r]
    by: dict[tuple[str, str, int], dict[str, Any]] = {
        (r["workload"], r["config"], r["rep"]): r for r in runs
    }
    names = [c["name"] for c in data["configs"]]
    results: dict[str, dict[str, Any]] = {}
    for w in data["workloads"]:
        results[w] = {}
        reps = sorted({r["rep"] for r in runs if r["workload"] == w})
        for name in names:
            mine = [by[(w, name, k)] for k in reps if (w, name, k) in by]
            if not mine:
                continue
            wall_ratios, cpu_ratios = [], []
            for k in reps:
                base, r = by.get((w, "none", k)), by.get((w, name, k))
                if base is None or r is None:
                    continue
                wall_ratios.append(r["wall_s"] / base["wall_s"])
                # an external tool's CPU over the child's whole life, prorated
                # to the timed body (it samples at a steady rate throughout)
                tool = r.get("tool_cpu_s", 0.0) * r["wall_s"] / r["lifetime_s"]
                cpu_ratios.append((r["cpu_s"] + tool) / base["cpu_s"])
            prof = [r["profiler"] for r in mine if r.get("profiler")]
            entry: dict[str, Any] = {
                "n": len(mine),
                "wall_s": _median([r["wall_s"] for r in mine]),
                "cpu_s": _median([r["cpu_s"] for r in mine]),
                "wall_ratio": _median(wall_ratios),
                # fastest against fastest: interference only adds time
                "wall_ratio_best": min(r["wall_s"] for r in mine)
                / min(by[(w, "none", k)]["wall_s"] for k in reps if (w, "none", k) in by),
                "wall_ratios": wall_ratios,
                "cpu_ratio": _median(cpu_ratios),
                "start_s": _median([r["start_s"] for r in mine]),
                "stop_s": _median([r["stop_s"] for r in mine]),
            }
            if any("tool_cpu_s" in r for r in mine):
                entry["tool_cpu_share"] = _median(
                    [r["tool_cpu_s"] / r["lifetime_s"] for r in mine if "tool_cpu_s" in r]
                )
            if prof:
                entry["hz_delivered"] = _median([p["hz_delivered"] for p in prof])
                entry["hz_requested"] = prof[0]["hz_requested"]
                entry["served_by_timer_share"] = _median(
                    [p["served_by_timer"] / max(1, p["sampling_events"]) for p in prof]
                )
            results[w][name] = entry
    data["results"] = results
    data["split"] = _split(runs, names, list(data["workloads"]))

    summary: dict[str, Any] = {}
    for c in data["configs"]:
        name = c["name"]
        rows = [results[w][name] for w in results if name in results[w]]
        errors = [r for r in data["runs"] if r["config"] == name and "error" in r]
        s: dict[str, Any] = {
            "available": c["available"],
            "reason": c["reason"],
            "workloads": len(rows),
            "failed_runs": len(errors),
            "first_error": errors[0]["error"] if errors else None,
        }
        if rows:
            s["geomean_wall_ratio"] = _geomean([r["wall_ratio"] for r in rows])
            s["geomean_wall_ratio_best"] = _geomean([r["wall_ratio_best"] for r in rows])
            s["geomean_cpu_ratio"] = _geomean([r["cpu_ratio"] for r in rows])
            s["max_wall_ratio"] = max(r["wall_ratio"] for r in rows if r["wall_ratio"])
            s["start_ms"] = 1e3 * (_median([r["start_s"] for r in rows]) or 0.0)
            s["stop_ms"] = 1e3 * (_median([r["stop_s"] for r in rows]) or 0.0)
            if any("tool_cpu_share" in r for r in rows):
                s["tool_cpu_share"] = _median([r.get("tool_cpu_share") for r in rows])
            if any("hz_delivered" in r for r in rows):
                s["hz_requested"] = next(r["hz_requested"] for r in rows if "hz_requested" in r)
                s["hz_delivered_median"] = _median([r.get("hz_delivered") for r in rows])
                s["hz_delivered_min"] = min(r["hz_delivered"] for r in rows if "hz_delivered" in r)
        summary[name] = s
    data["summary"] = summary
    data["targets"] = {
        name: {
            "max_overhead": limit,
            "measured": (summary.get(name, {}).get("geomean_wall_ratio") or math.nan) - 1,
        }
        for name, limit in TARGETS.items()
        if summary.get(name, {}).get("geomean_wall_ratio") is not None
    }
    data["micro_summary"] = _micro_summary(data.get("micro", {}))


def _split(runs: list[dict[str, Any]], names: list[str], workloads: list[str]) -> dict[str, Any]:
    """pysampler's cost in two parts, per workload and as geometric means:
    the import (``pysampler-import`` against ``none``) and sampling (each
    pysampler configuration against ``pysampler-import``), both as medians
    of ratios within a repetition."""
    if IMPORT_ONLY not in names:
        return {}
    by = {(r["workload"], r["config"], r["rep"]): r for r in runs}
    sessions = [n for n in names if n.startswith("pysampler-") and n != IMPORT_ONLY]

    def ratio(w: str, name: str, base: str) -> float | None:
        reps = sorted({r["rep"] for r in runs if r["workload"] == w})
        pairs = [(by.get((w, name, k)), by.get((w, base, k))) for k in reps]
        return _median([a["wall_s"] / b["wall_s"] for a, b in pairs if a and b])

    per: dict[str, dict[str, float | None]] = {}
    for w in workloads:
        per[w] = {"import": ratio(w, IMPORT_ONLY, "none")}
        for n in sessions:
            per[w][n] = ratio(w, n, IMPORT_ONLY)
    columns = ["import", *sessions]
    return {
        "columns": columns,
        "per_workload": per,
        "geomean": {c: _geomean([per[w][c] for w in per if per[w][c]]) for c in columns},
    }


def _micro_summary(micro: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lat in micro.get("latency", []):
        if "error" in lat:
            out["latency_error"] = lat["error"]
            continue
        out["latency"] = {
            "import_ms": 1e3 * lat["import_s"],
            "import_cpu_ms": 1e3 * lat["import_cpu_s"],
            "import_other_threads_cpu_ms": 1e3 * lat["import_other_threads_cpu_s"],
            "first_start_ms": 1e3 * lat["start_s"][0],
            "start_ms_median": 1e3 * statistics.median(lat["start_s"]),
            "start_ms_max": 1e3 * max(lat["start_s"]),
            "stop_ms_median": 1e3 * statistics.median(lat["stop_s"]),
            "stop_ms_max": 1e3 * max(lat["stop_s"]),
            "stop_after_busy_ms_median": 1e3 * statistics.median(lat["stop_after_busy_s"]),
            "busy_seconds": lat["busy_seconds"],
            "busy_samples_median": statistics.median(lat["busy_samples"]),
        }
    keys = (
        "depth",
        "threads",
        "mode",
        "hz",
        "per_event_us",
        "per_event_thread_cpu_us",
        "per_event_wall_us",
        "per_thread_sample_us",
        "overhead_ratio",
        "cpu_overhead_ratio",
        "median_overhead_ratio",
        "error",
    )
    out["sample_cost"] = [
        {k: r.get(k) for k in keys}
        | {"events_median": statistics.median(r["events"]) if "events" in r else None}
        for r in micro.get("sample_cost", [])
    ]
    for mem in micro.get("memory", []):
        out["memory"] = {k: v for k, v in mem.items() if k not in ("rss_growth_points", "spec")}
    return out


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None or math.isnan(ratio) else f"{(ratio - 1) * 100:+.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _loads(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def markdown(data: dict[str, Any]) -> str:
    """The results as a markdown page."""
    meta, summary = data["meta"], data["summary"]
    lines = [
        "# Overhead benchmark results",
        "",
        f"Made by `{meta['command']}` on {meta['platform']}, {meta['cpu_count']} CPUs, "
        f"Python {meta['python'].split()[0]}; {meta['reps']} interleaved repetitions of "
        f"~{meta['seconds']} s per run; took {meta['duration_s'] / 60:.1f} min. "
        f"Load average (1/5/15 min) {_loads(meta['loadavg_before'])} before, "
        f"{_loads(meta['loadavg_after'])} after "
        f"(per-run 1-min load: median {data['load']['median']:.2f}, "
        f"max {data['load']['max']:.2f}).",
        "",
        "Overhead = median over repetitions of (time with the profiler / time without, "
        "same repetition) - 1; the summary is the geometric mean over workloads. "
        "Best-of = fastest run with the profiler / fastest run without (other processes "
        "only ever add time, so on a shared machine this is the less disturbed estimate). "
        "CPU = CPU time of the whole profiled process over the timed body (all threads, "
        "the sampler's native threads included); for external tools (py-spy, austin) "
        "their own CPU, which runs on another core, is added prorated to the body's "
        "share of the process lifetime.",
        "",
        *(
            [
                f"Pinned (`--pin`): the program's threads on CPU {meta['pin']['work']}, the "
                f"profiler's own threads (an external tool: all of it) on CPU "
                f"{meta['pin']['tool']}. The GIL's hand-offs between the program's threads "
                "then stay on one core; the profiler's CPU is in the CPU column.",
                "",
            ]
            if meta.get("pin")
            else []
        ),
        "| configuration | wall overhead (geomean) | max | best-of wall overhead | "
        "CPU overhead (geomean) | delivered / requested Hz | start ms | stop ms | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    descr = {c["name"]: c["description"] for c in data["configs"]}
    for name, s in summary.items():
        if not s["available"]:
            lines.append(f"| {name} | — | — | — | — | — | — | — | cannot run here: {s['reason']} |")
            continue
        if not s["workloads"]:
            lines.append(f"| {name} | — | — | — | — | — | — | — | failed: {s['first_error']} |")
            continue
        notes = [descr[name]]
        if "tool_cpu_share" in s and s["tool_cpu_share"] is not None:
            notes.append(f"tool itself uses {100 * s['tool_cpu_share']:.1f}% of a core")
        if s["failed_runs"]:
            notes.append(f"{s['failed_runs']} runs failed: {s['first_error']}")
        rate = (
            f"{s['hz_delivered_median']:.0f} / {s['hz_requested']:.0f} "
            f"(min {s['hz_delivered_min']:.0f})"
            if "hz_delivered_median" in s
            else ""
        )
        lines.append(
            f"| {name} | {_pct(s['geomean_wall_ratio'])} | {_pct(s['max_wall_ratio'])} | "
            f"{_pct(s['geomean_wall_ratio_best'])} | {_pct(s['geomean_cpu_ratio'])} | {rate} | "
            f"{s['start_ms']:.2f} | {s['stop_ms']:.2f} | "
            f"{'; '.join(notes)} |"
        )
    lines += ["", "Targets (pysampler, CPU mode, geometric-mean wall overhead):", ""]
    for name, t in data["targets"].items():
        ok = t["measured"] <= t["max_overhead"]
        lines.append(
            f"- {name}: {t['measured'] * 100:+.2f}% "
            f"(target at most {t['max_overhead'] * 100:.0f}%): "
            f"{'met' if ok else 'MISSED'}"
        )

    names = [n for n, s in summary.items() if s["workloads"]]
    lines += ["", "## Wall-time overhead per workload", ""]
    lines.append("| workload | none s | " + " | ".join(n for n in names if n != "none") + " |")
    lines.append("|---|---:|" + "---:|" * (len(names) - 1))
    for w, row in data["results"].items():
        if "none" not in row:
            continue
        cells = [_pct(row[n]["wall_ratio"]) if n in row else "—" for n in names if n != "none"]
        lines.append(f"| {w} | {row['none']['wall_s']:.3f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## CPU-time overhead per workload (process CPU; external tools' own CPU added)",
        "",
    ]
    lines.append("| workload | none CPU s | " + " | ".join(n for n in names if n != "none") + " |")
    lines.append("|---|---:|" + "---:|" * (len(names) - 1))
    for w, row in data["results"].items():
        if "none" not in row:
            continue
        cells = [_pct(row[n]["cpu_ratio"]) if n in row else "—" for n in names if n != "none"]
        lines.append(f"| {w} | {row['none']['cpu_s']:.3f} | " + " | ".join(cells) + " |")
    split = data.get("split") or {}
    if split:
        cols = split["columns"]
        lines += [
            "",
            "## pysampler: import cost and sampling cost",
            "",
            f"Import = `{IMPORT_ONLY}` (pysampler imported, `start` and `stop` resolved, no "
            "session) against `none`; sampling = each session against "
            f"`{IMPORT_ONLY}`, so a session's overhead is their product. Medians of "
            "ratios within a repetition.",
            "",
            "| workload | import | " + " | ".join(f"sampling, {c}" for c in cols[1:]) + " |",
            "|---|" + "---:|" * len(cols),
        ]
        for w, row in split["per_workload"].items():
            lines.append(f"| {w} | " + " | ".join(_pct(row[c]) for c in cols) + " |")
        geo = split["geomean"]
        lines.append("| geometric mean | " + " | ".join(_pct(geo[c]) for c in cols) + " |")
    pys = [n for n in names if n.startswith("pysampler")]
    if pys:
        lines += ["", "## pysampler: delivered sample rate per workload", ""]
        lines.append("| workload | " + " | ".join(pys) + " |")
        lines.append("|---|" + "---:|" * len(pys))
        for w, row in data["results"].items():
            cells = []
            for n in pys:
                e = row.get(n, {})
                cells.append(
                    f"{e['hz_delivered']:.0f} / {e['hz_requested']:.0f}"
                    f" ({100 * e['served_by_timer_share']:.0f}% by timer)"
                    if "hz_delivered" in e
                    else "—"
                )
            lines.append(f"| {w} | " + " | ".join(cells) + " |")

    ms = data.get("micro_summary", {})
    if "latency" in ms:
        lat = ms["latency"]
        lines += [
            "",
            "## pysampler start and stop latency",
            "",
            f"- `import pysampler` with `start` and `stop` resolved: {lat['import_ms']:.1f} ms "
            f"wall, {lat['import_cpu_ms']:.1f} ms CPU; other threads used "
            f"{lat['import_other_threads_cpu_ms']:.0f} ms of CPU during it and the 0.5 s "
            f"after (none: no numpy, so no thread pool that busy-waits after import)",
            f"- `start()`: first {lat['first_start_ms']:.2f} ms, "
            f"median {lat['start_ms_median']:.3f} ms, "
            f"max {lat['start_ms_max']:.2f} ms",
            f"- `stop()` (builds the Profile) after a short idle session: median "
            f"{lat['stop_ms_median']:.2f} ms, max {lat['stop_ms_max']:.2f} ms",
            f"- `stop()` after {lat['busy_seconds']:.0f} s at 1 kHz "
            f"({lat['busy_samples_median']:.0f} samples, 20-frame stacks): median "
            f"{lat['stop_after_busy_ms_median']:.2f} ms",
            "- For comparison, Node's inspector CPU profiler: start ~58 ms, stop ~0.5 ms.",
        ]
    if ms.get("sample_cost"):
        lines += [
            "",
            "## pysampler cost per sample",
            "",
            "Fixed pure-Python work (~0.1 s) timed with the sampler off and on, alternately, "
            "many times, at the rate shown; cost = (fastest on - fastest off) / sampling events, "
            "from the process CPU clock (all threads: the main thread that records the sample "
            "and the native timer thread), the main thread's CPU clock, and wall time. CPU "
            "clocks are much less disturbed by other processes than wall time. Extra threads "
            "are parked in `Event.wait` at the same depth. Per thread-sample = process-CPU "
            "cost per event / thread samples recorded per event.",
            "",
            "| stack depth | threads | mode | Hz | events | µs/event, process CPU | "
            "µs/event, main-thread CPU | µs/event, wall | µs per thread-sample | "
            "CPU overhead at that rate | wall overhead (best-of) |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ms["sample_cost"]:
            if r.get("error"):
                lines.append(
                    f"| {r['depth']} | {r['threads']} | {r['mode']} | | | "
                    f"failed: {r['error']} | | | | | |"
                )
                continue
            lines.append(
                f"| {r['depth']} | {r['threads']} | {r['mode']} | {r['hz']} | "
                f"{r['events_median']:.0f} | {_num(r['per_event_us'])} | "
                f"{_num(r['per_event_thread_cpu_us'])} | {_num(r['per_event_wall_us'])} | "
                f"{_num(r['per_thread_sample_us'])} | {_pct(r['cpu_overhead_ratio'])} | "
                f"{_pct(r['overhead_ratio'])} |"
            )
    if "memory" in ms:
        m = ms["memory"]
        lines += [
            "",
            "## pysampler memory, 1 kHz CPU mode",
            "",
            f"Workload `{m['workload']}` profiled for {m['seconds']:.0f} s at 1 kHz "
            f"({m['hz_delivered']:.0f} Hz delivered): {m['samples']} samples, "
            f"{m['stack_nodes']} stack-tree nodes, {m['frames']} frames; sample table "
            f"{_mib(m['sample_table_bytes'])} ({m.get('row_bytes', 32)} bytes a row). RSS grew "
            f"{_mib(m['rss_growth_bytes'])} while profiling "
            f"({m['rss_slope_bytes_per_s'] / 1024:.1f} KiB/s by a linear fit) against "
            f"{_mib(m['control_rss_growth_bytes'])} "
            f"({m['control_rss_slope_bytes_per_s'] / 1024:.1f} KiB/s) for the same workload "
            f"unprofiled just before; {_mib(m['rss_growth_after_stop_bytes'])} after `stop()` "
            f"with the Profile alive (its arrays: {_mib(m['profile_array_bytes'])}).",
            "",
            f"**10 minutes at 1 kHz**, projected (not run): samples grow linearly with time "
            f"while the stack tree and frame table stop growing once the program's stacks "
            f"have all been seen, so the sample count and table are extended linearly to "
            f"600 s: {m['samples_10min_projected']:.0f} samples, sample table "
            f"{_mib(m['sample_table_10min_projected_bytes'])} (up to twice that reserved, "
            f"since the columns grow by doubling); the RSS fit extended to 600 s gives "
            f"{_mib(m['rss_growth_10min_projected_bytes'])}, or "
            f"{_mib((m['rss_slope_bytes_per_s'] - m['control_rss_slope_bytes_per_s']) * 600)} "
            f"net of the unprofiled workload's own growth.",
        ]
    return "\n".join(lines) + "\n"


def headline(data: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    out = []
    for name, s in data["summary"].items():
        if s.get("geomean_wall_ratio") is not None:
            out.append(
                f"{name:26s} wall {_pct(s['geomean_wall_ratio']):>8s}  "
                f"best-of {_pct(s['geomean_wall_ratio_best']):>8s}  "
                f"cpu {_pct(s['geomean_cpu_ratio']):>8s}"
            )
        else:
            out.append(f"{name:26s} {s['reason'] or s['first_error']}")
    return "\n".join(out)


def draw_chart(data: dict[str, Any], path: str) -> None:
    """Geomean overhead per configuration, per-workload overhead of the
    sampling profilers, and per-sample cost against depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    names = [n for n, s in summary.items() if n != "none" and s.get("geomean_wall_ratio")]
    fig, axes = plt.subplots(
        1, 4, figsize=(22, 6.5), gridspec_kw={"width_ratios": [1.1, 1.6, 0.8, 0.8]}
    )

    ax = axes[0]
    y = range(len(names))
    wall = [100 * (summary[n]["geomean_wall_ratio"] - 1) for n in names]
    cpu = [100 * (summary[n]["geomean_cpu_ratio"] - 1) for n in names]
    ax.barh([i + 0.2 for i in y], wall, 0.4, label="wall time", color="tab:blue")
    ax.barh(
        [i - 0.2 for i in y], cpu, 0.4, label="CPU time (incl. external tool)", color="tab:orange"
    )
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=10)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("overhead vs no profiler, % (geometric mean; symlog)")
    ax.set_title("Overhead by configuration")
    ax.legend(loc="center right", fontsize=8)

    ax = axes[1]
    shown = [n for n in names if n.startswith(("pysampler", "py-spy", "austin"))]
    wls = [w for w in data["results"] if "none" in data["results"][w]]
    width = 0.8 / max(1, len(shown))
    for k, n in enumerate(shown):
        vals = [100 * ((data["results"][w].get(n, {}).get("wall_ratio") or 1.0) - 1) for w in wls]
        ax.bar([i + k * width - 0.4 + width / 2 for i in range(len(wls))], vals, width, label=n)
    ax.set_xticks(range(len(wls)), wls, rotation=60, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("wall-time overhead, %")
    ax.set_title("Sampling profilers per workload")
    ax.legend(fontsize=7, ncol=2)

    cost = [
        r for r in data.get("micro_summary", {}).get("sample_cost", []) if r.get("per_event_us")
    ]
    ax = axes[2]
    # the depth sweep comes first; the thread sweep repeats depth 30 with 1 thread
    by_depth: dict[int, dict[str, Any]] = {}
    for r in cost:
        if r["threads"] == 1 and r["mode"] == "cpu":
            by_depth.setdefault(r["depth"], r)
    depths = sorted(by_depth)
    for key, label in (
        ("per_event_us", "process CPU"),
        ("per_event_thread_cpu_us", "main-thread CPU"),
        ("per_event_wall_us", "wall"),
    ):
        ax.plot(depths, [by_depth[d][key] for d in depths], "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("stack depth (frames), 1 thread, CPU mode")
    ax.set_ylabel("µs per sampling event")
    ax.set_title("pysampler cost per sample vs depth")
    ax.legend(fontsize=7)

    ax = axes[3]
    for mode in ("cpu", "wall"):
        by_threads = {r["threads"]: r for r in cost if r["depth"] == 30 and r["mode"] == mode}
        rows = [by_threads[n] for n in sorted(by_threads)]
        ax.plot([r["threads"] for r in rows], [r["per_event_us"] for r in rows], "o-", label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("threads (others parked at depth 30)")
    ax.set_ylabel("µs per sampling event (process CPU)")
    ax.set_title("... vs thread count")
    ax.legend(fontsize=7)

    load = data["load"]
    fig.suptitle(
        f"pysampler overhead benchmark — {data['meta']['command']} — "
        f"{data['meta']['cpu_count']} CPUs, 1-min load median {load['median']:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(data: dict[str, Any], outdir: str, *, chart: bool = True) -> list[str]:
    """Write results.json, results.md and (if asked and matplotlib is there) overhead.png."""
    loads = [r["load1"] for r in data["runs"]] or [os.getloadavg()[0]]
    data["load"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
    paths = []
    png = os.path.join(outdir, "overhead.png")
    data["chart"] = None
    if chart:
        try:
            draw_chart(data, png)
            data["chart"] = "overhead.png"
            paths.append(png)
        except ImportError as exc:
            data["chart_error"] = f"no chart: {exc}"
    js = os.path.join(outdir, "results.json")
    with open(js, "w") as f:
        json.dump(data, f, indent=1, default=str)
    md = os.path.join(outdir, "results.md")
    with open(md, "w") as f:
        f.write(markdown(data))
    return [js, md, *paths]


if __name__ == "__main__":
    # re-render results.md and overhead.png from a results.json
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/results.json"
    with open(path) as f:
        loaded = json.load(f)
    analyse(loaded)
    for written in write(loaded, os.path.dirname(os.path.abspath(path))):
        print("wrote", written)
