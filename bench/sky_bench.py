#!/usr/bin/env python3
"""Side-by-side benchmark on the emulated sky (run by bench/run-sky.sh, which brings the sky up).

For each region pair: rclone copy direct (run in the source region's namespace), skyx cp --via
direct, skyx cp with the planner's overlay, and the overlay with compression, on one dataset of
compressible and incompressible objects that starts in the source region's own store.

Measured per method: wall time, throughput of logical bytes, bytes each shaped link carried (the
kernel's tx counters on the veths, so every tool is measured the same way), egress cost of those
bytes at the catalog's prices, and for skyx the planner's predicted time and cost. Also measures
the sky's grid with `skyx bench paths` and compares it to the shaping.

Writes sky.json, sky.md and sky.svg into the output directory. Standard library only.
"""

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

METHODS = [
    ("rclone", "rclone copy (direct)"),
    ("skyx-direct", "skyx cp --via direct"),
    ("skyx-overlay", "skyx cp (overlay)"),
    ("skyx-overlay-zstd", "skyx cp (overlay + zstd)"),
]
COLORS = {"rclone": "#9e9e9e", "skyx-direct": "#90caf9", "skyx-overlay": "#1e88e5",
          "skyx-overlay-zstd": "#0d47a1"}


def run(argv, env=None, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(argv)}\n{p.stdout}\n{p.stderr}")
    return p


def sky_status(skyx, sky):
    return json.loads(run([skyx, "sky", "status", "--name", sky, "--json"]).stdout)


def bucket_url(region, name):
    kind = region["store"]
    return {"s3": f"s3://{name}", "gcs": f"gs://{name}",
            "azurite": f"az://devstoreaccount1/{name}"}[kind]


def rclone_env(prefix, region):
    addr, kind = region["addr"], region["store"]
    p = f"RCLONE_CONFIG_{prefix}_"
    if kind == "s3":
        return {p + "TYPE": "s3", p + "PROVIDER": "Other", p + "ENDPOINT": f"http://{addr}:9000",
                p + "ACCESS_KEY_ID": "skyx-sky", p + "SECRET_ACCESS_KEY": "skyx-sky-secret",
                p + "REGION": "us-east-1", p + "FORCE_PATH_STYLE": "true"}
    if kind == "azurite":
        return {p + "TYPE": "azureblob", p + "USE_EMULATOR": "true",
                p + "ENDPOINT": f"http://{addr}:10000/devstoreaccount1"}
    return {p + "TYPE": "google cloud storage", p + "ANONYMOUS": "true",
            p + "ENDPOINT": f"http://{addr}:9023/storage/v1/", p + "PROJECT_NUMBER": "skyx-sky"}


def rclone_path(remote, region, bucket, prefix):
    return f"{remote}:{bucket}/{prefix}"


def link_counters(regions):
    """(src region, dst region) -> tx bytes of the veth from src to dst."""
    index = {f"to{i}": r["region"] for i, r in enumerate(regions)}
    out = {}
    for r in regions:
        links = json.loads(run(["ip", "-n", r["namespace"], "-s", "-j", "link", "show"]).stdout)
        for l in links:
            if l["ifname"] in index:
                out[(r["region"], index[l["ifname"]])] = l["stats64"]["tx"]["bytes"]
    return out


def make_dataset(root, mb_each, files_each):
    """Incompressible random objects and compressible log-like text objects."""
    rng = random.Random(7)
    os.makedirs(os.path.join(root, "random"), exist_ok=True)
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    size = mb_each * 1_000_000
    for i in range(files_each):
        with open(os.path.join(root, "random", f"blob-{i}.bin"), "wb") as f:
            f.write(os.urandom(size))
        levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"]
        paths = ["/api/v1/objects", "/api/v1/buckets", "/healthz", "/api/v2/upload", "/login"]
        with open(os.path.join(root, "logs", f"service-{i}.log"), "w") as f:
            written, t = 0, 1_700_000_000.0
            while written < size:
                t += rng.random() * 0.05
                line = (f'{{"ts":{t:.3f},"level":"{rng.choice(levels)}","req":"{rng.getrandbits(32):08x}",'
                        f'"path":"{rng.choice(paths)}","status":{rng.choice([200, 200, 200, 204, 404, 500])},'
                        f'"ms":{rng.randint(1, 900)},"bytes":{rng.randint(0, 1 << 20)}}}\n')
                f.write(line)
                written += len(line)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    count = sum(len(fs) for _, _, fs in os.walk(root))
    return total, count


def prices(skyx, regions):
    out = {}
    for r in regions:
        for row in json.loads(run([skyx, "catalog", "egress", r["region"], "--json"]).stdout):
            out[(row["src"], row["dst"])] = row["egress_usd_per_gb"]
    return out


def bench_pair(skyx, sky, regions, src, dst, dataset, dataset_bytes, price):
    by_id = {r["region"]: r for r in regions}
    s, d = by_id[src], by_id[dst]
    tag = f"{src}-{dst}".replace(":", "-")
    src_bucket, dst_bucket = f"src-{abs(hash(tag)) % 10**8}", f"dst-{abs(hash(tag)) % 10**8}"
    src_url, dst_url = bucket_url(s, src_bucket), bucket_url(d, dst_bucket)
    exec_in = lambda region, argv: run([skyx, "sky", "exec", region, "--name", sky, "--"] + argv)
    exec_in(src, [skyx, "mb", src_url])
    exec_in(src, [skyx, "cp", "-r", dataset, f"{src_url}/ds/", "--no-progress"])
    exec_in(dst, [skyx, "mb", dst_url])
    results = {}
    for method, _ in METHODS:
        before = link_counters(regions)
        started = time.monotonic()
        report = None
        if method == "rclone":
            env = dict(os.environ)
            env.pop("AWS_CA_BUNDLE", None)  # breaks rclone's S3 backend (DEPENDENCIES.md)
            env.update(rclone_env("SRC", s))
            env.update(rclone_env("DST", d))
            src_bucket_name = src_url.rsplit("/", 1)[-1] if s["store"] == "azurite" else src_url.split("://")[1]
            dst_bucket_name = dst_url.rsplit("/", 1)[-1] if d["store"] == "azurite" else dst_url.split("://")[1]
            run(["ip", "netns", "exec", s["namespace"], "rclone", "copy", "--retries", "1",
                 f"SRC:{src_bucket_name}/ds", f"DST:{dst_bucket_name}/{method}"], env=env)
        else:
            argv = [skyx, "cp", "-r", f"{src_url}/ds/", f"{dst_url}/{method}/", "--sky", sky,
                    "--src-region", src, "--dst-region", dst, "--json", "--no-progress"]
            argv += {"skyx-direct": ["--via", "direct", "--compress", "off"],
                     "skyx-overlay": ["--compress", "off"],
                     "skyx-overlay-zstd": ["--compress", "auto"]}[method]
            report = json.loads(run(argv).stdout)
        elapsed = time.monotonic() - started
        after = link_counters(regions)
        links = {f"{a} -> {b}": after[(a, b)] - before[(a, b)] for (a, b) in after
                 if after[(a, b)] - before[(a, b)] > 1_000_000}
        egress = sum(v / 1e9 * price.get(tuple(k.split(" -> ")), 0.0) for k, v in links.items())
        row = {
            "seconds": elapsed,
            "throughput_mbps": dataset_bytes * 8 / elapsed / 1e6,
            "link_bytes": links,
            "wire_bytes_total": sum(links.values()),
            "egress_usd_metered": egress,
        }
        if report is not None:
            row["skyx_egress_usd"] = report["egress_usd"]
            row["skyx_total_usd"] = report["total_usd"]
            row["objects_copied"] = report["objects_copied"]
            row["compression_ratio"] = report["compression_ratio"]
            row["route"] = [[h["src_region"], h["dst_region"]] for h in report["hops"]]
            p = report.get("predicted") or {}
            row["predicted_seconds"] = p.get("time_s")
            row["predicted_usd"] = p.get("cost_usd")
            row["predicted_egress_usd"] = p.get("egress_usd")
            row["copy_seconds"] = report["elapsed_s"]
        results[method] = row
        print(f"  {method:<18} {elapsed:7.1f} s {row['throughput_mbps']:7.1f} Mbit/s "
              f"wire {row['wire_bytes_total']/1e6:7.1f} MB egress ${egress:.4f}", flush=True)
    return results


def svg_plot(pairs, dataset_bytes, path):
    """Grouped bars: throughput (left) and metered egress cost (right) per pair and method."""
    w, h, pad, gap = 1000, 420, 60, 40
    panel_w = (w - 3 * pad) / 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for p_i, (key, title, fmt) in enumerate([("throughput_mbps", "Throughput (Mbit/s, logical bytes)", "{:.0f}"),
                                              ("egress_usd_metered", "Egress cost (USD, metered on the links)", "{:.4f}")]):
        x0 = pad + p_i * (panel_w + pad)
        y0, ph = 40, h - 140
        vmax = max(r[m][key] for r in pairs.values() for m, _ in METHODS) or 1
        out.append(f'<text x="{x0 + panel_w/2}" y="20" text-anchor="middle" font-size="14">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{y0+ph}" x2="{x0+panel_w}" y2="{y0+ph}" stroke="black"/>')
        group_w = panel_w / len(pairs)
        bar_w = (group_w - gap) / len(METHODS)
        for g, (pair, res) in enumerate(pairs.items()):
            gx = x0 + g * group_w + gap / 2
            for m_i, (m, _) in enumerate(METHODS):
                v = res[m][key]
                bh = ph * v / vmax
                bx = gx + m_i * bar_w
                out.append(f'<rect x="{bx:.1f}" y="{y0+ph-bh:.1f}" width="{bar_w-2:.1f}" height="{bh:.1f}" fill="{COLORS[m]}"/>')
                out.append(f'<text x="{bx+bar_w/2:.1f}" y="{y0+ph-bh-3:.1f}" text-anchor="middle" font-size="8">{fmt.format(v)}</text>')
            src, dst = pair.split(" -> ")
            out.append(f'<text x="{gx+(group_w-gap)/2:.1f}" y="{y0+ph+15}" text-anchor="middle" font-size="10">{src} →</text>')
            out.append(f'<text x="{gx+(group_w-gap)/2:.1f}" y="{y0+ph+28}" text-anchor="middle" font-size="10">{dst}</text>')
    lx = pad
    for m, label in METHODS:
        out.append(f'<rect x="{lx}" y="{h-40}" width="12" height="12" fill="{COLORS[m]}"/>')
        out.append(f'<text x="{lx+16}" y="{h-30}">{label}</text>')
        lx += 200
    out.append(f'<text x="{pad}" y="{h-10}" font-size="10">dataset: {dataset_bytes/1e6:.0f} MB, half incompressible, half log text; emulated sky at 1/50 of measured inter-region throughput</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def replot(out_dir):
    """Redraws sky.svg from sky.json (after a change to the plot, without re-measuring)."""
    with open(os.path.join(out_dir, "sky.json")) as f:
        d = json.load(f)
    svg_plot(d["pairs"], d["dataset_bytes"], os.path.join(out_dir, "sky.svg"))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--replot":
        replot(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyx", required=True)
    ap.add_argument("--sky", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", default="aws:us-east-1>gcp:asia-southeast1-a,"
                    "azure:eastus>azure:brazilsouth,azure:southafricanorth>aws:ap-east-1")
    ap.add_argument("--mb-each", type=int, default=8)
    ap.add_argument("--files-each", type=int, default=3)
    ap.add_argument("--probe-seconds", type=float, default=3.0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    status = sky_status(args.skyx, args.sky)
    regions = status["spec"]["regions"]
    for r in regions:
        r["region"] = r["region"] if isinstance(r["region"], str) else str(r["region"])

    print("== skyx bench paths (every ordered pair)", flush=True)
    grid_file = os.path.join(args.out, "sky-measured-grid.csv")
    probe = json.loads(run([args.skyx, "bench", "paths", "--sky", args.sky, "--seconds",
                            str(args.probe_seconds), "--connections", "16", "--json",
                            "--out", grid_file]).stdout)
    ratios = sorted(p["gbps"] / p["shaped_gbps"] for p in probe)

    tmp = tempfile.mkdtemp(prefix="skyx-sky-bench-")
    try:
        dataset = os.path.join(tmp, "ds")
        dataset_bytes, objects = make_dataset(dataset, args.mb_each, args.files_each)
        price = prices(args.skyx, regions)
        pairs = {}
        for pair in args.pairs.split(","):
            src, dst = pair.split(">")
            print(f"== {src} -> {dst}", flush=True)
            pairs[f"{src} -> {dst}"] = bench_pair(args.skyx, args.sky, regions, src, dst, dataset,
                                                  dataset_bytes, price)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    machine = {"cpus": os.cpu_count(), "kernel": platform.release(),
               "rclone": run(["rclone", "version"]).stdout.splitlines()[0]}
    with open(os.path.join(args.out, "sky.json"), "w") as f:
        json.dump({"machine": machine, "command": " ".join(sys.argv), "sky": status["spec"]["name"],
                   "scale": status["spec"]["scale"], "dataset_bytes": dataset_bytes,
                   "objects": objects, "probe": probe, "pairs": pairs}, f, indent=2)
    svg_plot(pairs, dataset_bytes, os.path.join(args.out, "sky.svg"))

    md = [f"# Emulated sky: rclone vs skyx, side by side\n",
          f"Machine: {machine['cpus']} vCPU, kernel {machine['kernel']}, {machine['rclone']}.",
          f"Sky: {len(regions)} regions, links shaped to {status['spec']['scale']} x the catalog's "
          f"measured throughput (tbf per direction, VM egress caps via ifb; no added latency).",
          f"Dataset: {objects} objects, {dataset_bytes/1e6:.1f} MB: half random bytes, half JSON log "
          f"lines. Each method copies it from the source region's store to the destination "
          f"region's store.\n",
          f"Command: `bash bench/run-sky.sh` ({' '.join(sys.argv[1:])})\n",
          "Wire bytes and egress are the kernel's transmit counters on every shaped link (the same "
          "for every tool; with GSO they undercount TCP/IP headers), priced at the catalog's "
          "egress price of each link. VM time is left out of the comparison: in a sky scaled to "
          "1/50 every transfer takes 50 times longer than in the clouds, so VM-hours would be "
          "50 times too high; skyx's own prediction and bill (with agent VMs) are in the last "
          "column and in sky.json.\n",
          "## The sky's grid, measured (`skyx bench paths`, 16 connections)\n",
          f"{len(probe)} ordered pairs; measured / shaped: min {ratios[0]:.3f}, median "
          f"{ratios[len(ratios)//2]:.3f}, max {ratios[-1]:.3f}. Grid: `sky-measured-grid.csv`.\n",
          "## Copies\n",
          "| pair | method | time s | Mbit/s | wire MB (all links) | links used (MB) | egress $ (metered) | skyx predicted s / $ |",
          "|---|---|---:|---:|---:|---|---:|---|"]
    for pair, res in pairs.items():
        for m, label in METHODS:
            r = res[m]
            route = ", ".join(f"{k.replace(' -> ', '→')} ({v/1e6:.0f})" for k, v in sorted(r["link_bytes"].items()))
            pred = (f"{r['predicted_seconds']:.1f} / {r['predicted_usd']:.4f}"
                    if r.get("predicted_seconds") is not None else "-")
            md.append(f"| {pair} | {label} | {r['seconds']:.1f} | {r['throughput_mbps']:.1f} | "
                      f"{r['wire_bytes_total']/1e6:.1f} | {route} | {r['egress_usd_metered']:.4f} | {pred} |")
    md.append("\n## Ratios within each pair (same run)\n")
    md.append("| pair | overlay vs rclone (speed) | overlay+zstd vs rclone (speed) | overlay+zstd vs rclone (egress $) |")
    md.append("|---|---:|---:|---:|")
    for pair, res in pairs.items():
        rc = res["rclone"]
        md.append(f"| {pair} | {rc['seconds']/res['skyx-overlay']['seconds']:.2f}x | "
                  f"{rc['seconds']/res['skyx-overlay-zstd']['seconds']:.2f}x | "
                  f"{res['skyx-overlay-zstd']['egress_usd_metered']/rc['egress_usd_metered']:.2f}x |")
    md.append("\n![throughput and cost per method](sky.svg)\n")
    with open(os.path.join(args.out, "sky.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
