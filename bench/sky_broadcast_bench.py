#!/usr/bin/env python3
"""Broadcast benchmark on the emulated sky (run by bench/run-sky-broadcast.sh, which brings the
sky up): one dataset in the source region's S3 copied to three destinations on two other
clouds, three ways, in one run:

- broadcast: one `skyx cp SRC DST1 DST2 DST3`, planned as trees that fork at relays;
- three overlay copies at once: three `skyx cp SRC DSTi`, each planned on its own (same floor);
- three direct copies at once: three `skyx cp SRC DSTi --via direct`.

Measured per method: wall time until the last destination has everything, the bytes every
shaped link carried (the kernel's tx counters on the veths, the same for every method), their
egress cost at the catalog's prices, and skyx's own metered egress and bill. Compression is off
so that the bytes on the links are the data's.

Writes sky-broadcast.json and sky-broadcast.md into the output directory. Standard library only.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from sky_bench import bucket_url, link_counters, make_dataset, prices, run, sky_status

METHODS = [
    ("broadcast", "skyx cp to 3 destinations (broadcast trees)"),
    ("overlay-x3", "3 x skyx cp (overlay), at once"),
    ("direct-x3", "3 x skyx cp --via direct, at once"),
]


def bench(args, regions, dataset, price):
    by_id = {r["region"]: r for r in regions}
    exec_in = lambda region, argv: run([args.skyx, "sky", "exec", region, "--name", args.sky, "--"] + argv)
    src_url = bucket_url(by_id[args.src], "bsrc")
    exec_in(args.src, [args.skyx, "mb", src_url])
    exec_in(args.src, [args.skyx, "cp", "-r", dataset, f"{src_url}/ds/", "--no-progress"])
    dst_urls = []
    for i, d in enumerate(args.dsts):
        url = bucket_url(by_id[d], f"bdst{i}")
        exec_in(d, [args.skyx, "mb", url])
        dst_urls.append(url)
    common = ["--sky", args.sky, "--src-region", args.src, "--compress", "off", "--json",
              "--no-progress"]
    results = {}
    for method, _ in METHODS:
        targets = [f"{u}/{method}/" for u in dst_urls]
        if method == "broadcast":
            commands = [[args.skyx, "cp", "-r", f"{src_url}/ds/", *targets, *common,
                         "--dst-region", ",".join(args.dsts), "--throughput-floor", args.floor]]
        else:
            extra = ["--via", "direct"] if method == "direct-x3" else ["--throughput-floor", args.floor]
            commands = [[args.skyx, "cp", "-r", f"{src_url}/ds/", t, *common, "--dst-region", d, *extra]
                        for t, d in zip(targets, args.dsts)]
        before = link_counters(regions)
        started = time.monotonic()
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in commands]
        reports, finished = [], []
        for p, c in zip(procs, commands):
            out, err = p.communicate()
            finished.append(time.monotonic() - started)
            if p.returncode != 0:
                sys.exit(f"command failed ({p.returncode}): {' '.join(c)}\n{out}\n{err}")
            reports.append(json.loads(out))
        elapsed = max(finished)
        after = link_counters(regions)
        links = {f"{a} -> {b}": after[(a, b)] - before[(a, b)] for (a, b) in after
                 if after[(a, b)] - before[(a, b)] > 1_000_000}
        egress = sum(v / 1e9 * price.get(tuple(k.split(" -> ")), 0.0) for k, v in links.items())
        row = {
            "commands": [" ".join(c) for c in commands],
            "seconds": elapsed,
            "link_bytes": links,
            "wire_bytes_total": sum(links.values()),
            "egress_usd_metered": egress,
            "skyx_egress_usd": sum(r["egress_usd"] for r in reports),
            "skyx_total_usd": sum(r["total_usd"] for r in reports),
            "objects_copied": sum(r["objects_copied"] for r in reports),
            "agents": sum(len(r["agents"]) for r in reports),
            "hops": [[h["src_region"], h["dst_region"], h["wire_bytes"]] for r in reports for h in r["hops"]],
        }
        results[method] = row
        print(f"  {method:<12} {elapsed:7.1f} s  links {row['wire_bytes_total']/1e6:7.1f} MB  "
              f"egress ${egress:.4f} (skyx metered ${row['skyx_egress_usd']:.4f}, bill ${row['skyx_total_usd']:.4f})",
              flush=True)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyx", required=True)
    ap.add_argument("--sky", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--src", default="aws:us-east-1")
    ap.add_argument("--dsts", default="azure:southafricanorth,azure:brazilsouth,gcp:asia-southeast1-a")
    ap.add_argument("--floor", default="0.05", help="--throughput-floor (Gbps at the sky's scale)")
    ap.add_argument("--mb-each", type=int, default=10)
    ap.add_argument("--files-each", type=int, default=3)
    args = ap.parse_args()
    args.dsts = args.dsts.split(",")
    status = sky_status(args.skyx, args.sky)
    regions = status["spec"]["regions"]
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="skyx-sky-broadcast-")
    try:
        dataset = os.path.join(tmp, "ds")
        dataset_bytes, objects = make_dataset(dataset, args.mb_each, args.files_each)
        price = prices(args.skyx, regions)
        print(f"== {args.src} -> {', '.join(args.dsts)}: {objects} objects, {dataset_bytes/1e6:.0f} MB", flush=True)
        results = bench(args, regions, dataset, price)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    b, o, d = (results[m] for m in ("broadcast", "overlay-x3", "direct-x3"))
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "bench/run-sky-broadcast.sh " + " ".join(sys.argv[1:]),
        "sky": {"name": args.sky, "scale": status["spec"]["scale"],
                "regions": [r["region"] for r in regions]},
        "dataset": {"objects": objects, "bytes": dataset_bytes},
        "src": args.src, "dsts": args.dsts, "floor_gbps": args.floor,
        "results": results,
        "ratios": {
            "time_overlay_x3_over_broadcast": o["seconds"] / b["seconds"],
            "time_direct_x3_over_broadcast": d["seconds"] / b["seconds"],
            "egress_overlay_x3_over_broadcast": o["egress_usd_metered"] / b["egress_usd_metered"],
            "egress_direct_x3_over_broadcast": d["egress_usd_metered"] / b["egress_usd_metered"],
            "link_bytes_overlay_x3_over_broadcast": o["wire_bytes_total"] / b["wire_bytes_total"],
        },
    }
    with open(os.path.join(args.out, "sky-broadcast.json"), "w") as f:
        json.dump(summary, f, indent=2)
    r = summary["ratios"]
    md = ["# Emulated sky: one broadcast vs three copies\n",
          f"Machine: {os.cpu_count()} vCPU, {platform.platform()}. Command: `{summary['command']}`.\n",
          f"Sky {args.sky!r} at scale {summary['sky']['scale']} ({', '.join(summary['sky']['regions'])}); "
          f"{objects} objects, {dataset_bytes/1e6:.0f} MB (half random, half log text), compression off; "
          f"from {args.src} to {', '.join(args.dsts)}; overlay plans with --throughput-floor {args.floor}. "
          "One run; bytes per link are the veths' tx counters, egress at the catalog's prices.\n",
          "| method | time to last destination (s) | bytes on links (MB) | egress $ (links) | skyx metered egress $ | skyx bill $ (with VMs) | agents |",
          "|---|---|---|---|---|---|---|"]
    for m, label in METHODS:
        x = results[m]
        md.append(f"| {label} | {x['seconds']:.1f} | {x['wire_bytes_total']/1e6:.1f} | {x['egress_usd_metered']:.4f} | "
                  f"{x['skyx_egress_usd']:.4f} | {x['skyx_total_usd']:.4f} | {x['agents']} |")
    md += ["", "Ratios (from this one run):", "",
           f"- time: 3 overlay copies / broadcast = {r['time_overlay_x3_over_broadcast']:.2f}x; "
           f"3 direct copies / broadcast = {r['time_direct_x3_over_broadcast']:.2f}x",
           f"- egress: 3 overlay copies / broadcast = {r['egress_overlay_x3_over_broadcast']:.2f}x; "
           f"3 direct copies / broadcast = {r['egress_direct_x3_over_broadcast']:.2f}x",
           f"- bytes on links: 3 overlay copies / broadcast = {r['link_bytes_overlay_x3_over_broadcast']:.2f}x",
           "", "Links each method used (MB):", ""]
    for m, label in METHODS:
        links = ", ".join(f"{k} {v/1e6:.1f}" for k, v in sorted(results[m]["link_bytes"].items()))
        md.append(f"- {label}: {links}")
    with open(os.path.join(args.out, "sky-broadcast.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
