#!/usr/bin/env python3
"""Writes the "reference service under load" section of docs/BENCHMARKS.md from service_load runs.

Usage: service_report.py <run-dir> <BENCHMARKS.md>. <run-dir> holds meta.txt and one
<config>.txt per configuration (the `name: value unit` lines of bench/service_load), where the
file's first line is `# <description>`.
"""
import os
import sys

BEGIN = "<!-- service-load:begin -->"
END = "<!-- service-load:end -->"


def read(path):
    desc, values = "", {}
    for line in open(path):
        line = line.strip()
        if line.startswith("# "):
            desc = line[2:]
            continue
        if ": " not in line:
            continue
        name, rest = line.split(": ", 1)
        values[name.removeprefix("service_load_")] = rest.split(" ")[0]
    return desc, values


def main(run_dir, out_md):
    meta = open(os.path.join(run_dir, "meta.txt")).read().strip()
    rows = []
    for name in sorted(os.listdir(run_dir)):
        if name == "meta.txt" or not name.endswith(".txt"):
            continue
        desc, v = read(os.path.join(run_dir, name))
        rows.append(
            f"| {desc} | {v['clients']} | {v['throughput']} | {v['post_p50']} | {v['post_p99']} | "
            f"{v['job_p50']} | {v['job_p99']} | {v['queue_p50']} | {v['queue_p99']} | {v['jobs']} | "
            f"{v['errors']} | {v['rejected_429']} | "
            f"{v['unfinished']} |")
    section = [
        BEGIN,
        "## The reference service under load",
        "",
        "`scripts/bench-service.sh` (bench/service_load): procpool-service with 2 workers on a fresh",
        "database; N clients, each on one keep-alive connection, POST a `count_primes` job",
        "(n = 10,000: a fraction of a millisecond of computation, so the figures are the service's own",
        "cost), wait for its end on `/events`, and POST the next, for a fixed time. *POST* is the time",
        "to the `202` (the job is committed); *job* is from sending the POST to seeing the job's final",
        "state. The load generator runs on the same 2 cores as the service and its workers.",
        "",
        "```",
        meta,
        "```",
        "",
        "| configuration | clients | jobs/s | POST p50 ms | POST p99 ms | job p50 ms | job p99 ms | claim p50 ms | claim p99 ms | jobs | errors | 429 | unfinished |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Reading it: each job is three committed changes (queued, running, final) plus an event",
        "and a POST; group commit lets those of many clients share one sync to disk, which is why",
        "throughput grows with clients, and why `--sync normal` gains little here. The machine is",
        "CPU-bound (load generator, event loop, database thread and two workers on 2 cores). Before",
        "the service set TCP_NODELAY, Nagle's algorithm held small responses and events until the",
        "client's delayed ACK: job p99 was ~45 ms at 16 clients. No peer service is measured beside",
        "it: there is no like-for-like Python or Node job service in `../shared/peers`.",
        END,
    ]
    text = open(out_md).read() if os.path.exists(out_md) else ""
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + text[text.index(END) + len(END) + 1 :]
    with open(out_md, "w") as f:
        f.write(text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
