#!/usr/bin/env python3
"""Markdown table of a bench/compare.sh run.

    python3 bench/table.py OUTDIR

Reads OUTDIR/{a-rate,a-closed,b}-{ejabberd,beamline}.json and
OUTDIR/c-{rate,closed}-cluster.json (any may be missing: its cells are
"—") and prints: metric | ejabberd | beamline | beamline / ejabberd |
beamline 3-node cluster. The ratio is beamline's figure over ejabberd's
(for a cost — CPU, memory, latency — below 1 is better for beamline; for
a throughput, above 1).
"""

import json
import os
import sys


def load(out, name):
    path = os.path.join(out, name + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(doc, *path):
    """doc[path[0]][path[1]]..., or None anywhere along the way."""
    for key in path:
        if doc is None:
            return None
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "B":
        return f"{v / 1024:,.1f} KiB"
    if unit == "ms":
        return f"{v:,.2f} ms"
    if unit == "cpu":
        return f"{v:,.0f} CPU-ms"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "n":
        return f"{v:,}"
    return str(v)


def ratio(a, b):
    if a is None or b is None or not isinstance(a, (int, float)) or not b:
        return "—"
    return f"{a / b:.2f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    runs = {
        name: load(out, name)
        for name in [
            "a-rate-ejabberd",
            "a-rate-beamline",
            "a-closed-ejabberd",
            "a-closed-beamline",
            "b-ejabberd",
            "b-beamline",
            "c-rate-cluster",
            "c-closed-cluster",
        ]
    }
    b_users = None
    for s in ("ejabberd", "beamline"):
        b_users = b_users or get(runs[f"b-{s}"], "users")
    b_label = f"{b_users:,}" if b_users else "N"

    def sessions(run):
        ok, att = get(run, "phases", "login", "ok"), get(run, "phases", "login", "attempted")
        return None if ok is None else f"{ok:,} / {att:,}"

    def lost_dup(run):
        m = get(run, "phases", "messaging")
        if not m:
            return None
        return f"{m['sent']:,} / {m['delivered']:,} / {m['lost']:,} / {m['duplicated']:,}"

    # (label, run prefix, cluster run or None, extractor, unit)
    login = ("phases", "login")
    msg = ("phases", "messaging")
    res = ("resources",)
    rows = [
        ("**a. 1,000 users, plaintext c2s, PLAIN (cluster: SCRAM-SHA-256)**", None, None, None, None),
        ("sessions logged in", "a-rate", "c-rate", sessions, "raw"),
        ("login throughput", "a-rate", "c-rate", lambda r: get(r, *login, "per_s"), "/s"),
        ("login latency p99", "a-rate", "c-rate", lambda r: get(r, *login, "latency_ms", "p99"), "ms"),
        ("server CPU per 1,000 logins", "a-rate", "c-rate", lambda r: get(r, *res, "cpu_ms_per_1000_logins"), "cpu"),
        ("server RSS per idle session (after 5 s hold)", "a-rate", "c-rate",
         lambda r: get(r, *res, "rss_bytes_per_session_after_hold"), "B"),
        ("200 senders at 2,000 msg/s: delivered/s", "a-rate", "c-rate", lambda r: get(r, *msg, "delivered_per_s"), "/s"),
        ("… one-way latency p50", "a-rate", "c-rate", lambda r: get(r, *msg, "latency_ms", "p50"), "ms"),
        ("… one-way latency p99", "a-rate", "c-rate", lambda r: get(r, *msg, "latency_ms", "p99"), "ms"),
        ("… sent / delivered / lost / duplicated", "a-rate", "c-rate", lost_dup, "raw"),
        ("SCRAM-SHA-256 login (2nd run): login throughput", "a-closed", "c-closed",
         lambda r: get(r, *login, "per_s"), "/s"),
        ("… server CPU per 1,000 logins", "a-closed", "c-closed",
         lambda r: get(r, *res, "cpu_ms_per_1000_logins"), "cpu"),
        ("closed loop (window 4): delivered/s at saturation", "a-closed", "c-closed",
         lambda r: get(r, *msg, "delivered_per_s"), "/s"),
        ("… one-way latency p99", "a-closed", "c-closed", lambda r: get(r, *msg, "latency_ms", "p99"), "ms"),
        ("… server CPU per 1,000 delivered", "a-closed", "c-closed",
         lambda r: get(r, *res, "cpu_ms_per_1000_delivered"), "cpu"),
        ("… sent / delivered / lost / duplicated", "a-closed", "c-closed", lost_dup, "raw"),
        (f"**b. {b_label} users, STARTTLS + SCRAM-SHA-256**", None, None, None, None),
        ("sessions logged in", "b", None, sessions, "raw"),
        ("login throughput", "b", None, lambda r: get(r, *login, "per_s"), "/s"),
        ("login latency p99", "b", None, lambda r: get(r, *login, "latency_ms", "p99"), "ms"),
        ("server CPU per 1,000 logins", "b", None, lambda r: get(r, *res, "cpu_ms_per_1000_logins"), "cpu"),
        ("server RSS per idle session (after 10 s hold)", "b", None,
         lambda r: get(r, *res, "rss_bytes_per_session_after_hold"), "B"),
        ("server RSS after the hold, total", "b", None,
         lambda r: next((x["rss_bytes"] for x in get(r, *res, "samples") or [] if x["at"] == "after_hold"), None), "B"),
    ]
    print("| metric | ejabberd 23.01 | beamline | beamline / ejabberd | beamline 3-node cluster |")
    print("|---|---:|---:|---:|---:|")
    for label, prefix, cprefix, f, unit in rows:
        if prefix is None:
            print(f"| {label} | | | | |")
            continue
        e = f(runs[f"{prefix}-ejabberd"]) if runs[f"{prefix}-ejabberd"] else None
        b = f(runs[f"{prefix}-beamline"]) if runs[f"{prefix}-beamline"] else None
        c = f(runs[f"{cprefix}-cluster"]) if cprefix and runs[f"{cprefix}-cluster"] else None
        r = ratio(b, e) if unit != "raw" else ""
        print(f"| {label} | {fmt(e, unit)} | {fmt(b, unit)} | {r} | {fmt(c, unit)} |")


if __name__ == "__main__":
    main()
