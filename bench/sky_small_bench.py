#!/usr/bin/env python3
"""Small files between regions of the emulated sky, with distance: skyx against rclone.

The sky (built here) has three regions, links delayed by their measured round trips: the
source S3 in aws:us-east-1, where the gateway (this machine's root namespace) sits; an S3
destination in aws:ap-east-1 and an Azurite destination in azure:southafricanorth, each
200+ ms away. Every tool runs on the gateway's machine, as a user would run it. rclone
(--transfers 16) copies through this machine; skyx plans agents in the regions. Reports
objects per second and the ratio to rclone in the same case. Measures; asserts nothing but
that every tool copied everything. (s5cmd copies within one endpoint only: no case here.)
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time

SRC, S3_DST, AZ_DST = "aws:us-east-1", "aws:ap-east-1", "azure:southafricanorth"

def run(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return wall, p.stdout

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyx", required=True)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    n, skyx = a.files, a.skyx
    work = tempfile.mkdtemp(prefix="skyx-sky-small-")
    state, name = f"{work}/sky", f"bs{os.getpid() % 10000}"
    env = dict(os.environ, SKYX_STATE_DIR=f"{work}/state")
    env.pop("SKYX_SKY", None)
    run([skyx, "sky", "up", "--name", name, "--state-dir", state, "--regions",
         f"{SRC},{S3_DST},{AZ_DST}", "--scale", "0.05", "--subnet", "93"], env)
    try:
        _, status = run([skyx, "sky", "status", "--state-dir", state, "--json"], env)
        spec = json.loads(status)["spec"]
        addr = {r["region"]: r["addr"] for r in spec["regions"]}
        rtt = {(l["src"], l["dst"]): l["rtt_ms"] for l in spec["links"]}
        ctl = {r["region"]: r["control_rtt_ms"] for r in spec["regions"]}
        src = f"{work}/src"
        for i in range(n):
            d = f"{src}/d{i // 1000:03}"
            os.makedirs(d, exist_ok=True)
            with open(f"{d}/f{i:06}", "wb") as f:
                f.write(os.urandom(4096))
        def in_region(region, *args):
            return run([skyx, "sky", "exec", region, "--state-dir", state, "--", skyx, *args], env)
        in_region(SRC, "mb", "s3://src")
        in_region(SRC, "cp", "-r", src, "s3://src/data", "--no-progress")
        for b in ("skyx", "rclone"):
            in_region(S3_DST, "mb", f"s3://{b}")
            in_region(AZ_DST, "mb", f"az://devstoreaccount1/{b}")
        rc = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
        for remote, region in (("SRC", SRC), ("DST", S3_DST)):
            rc.update({f"RCLONE_CONFIG_{remote}_TYPE": "s3", f"RCLONE_CONFIG_{remote}_PROVIDER": "Other",
                       f"RCLONE_CONFIG_{remote}_ENDPOINT": f"http://{addr[region]}:9000",
                       f"RCLONE_CONFIG_{remote}_ACCESS_KEY_ID": "skyx-sky",
                       f"RCLONE_CONFIG_{remote}_SECRET_ACCESS_KEY": "skyx-sky-secret",
                       f"RCLONE_CONFIG_{remote}_REGION": "us-east-1",
                       f"RCLONE_CONFIG_{remote}_FORCE_PATH_STYLE": "true"})
        rc.update(RCLONE_CONFIG_AZ_TYPE="azureblob", RCLONE_CONFIG_AZ_USE_EMULATOR="true",
                  RCLONE_CONFIG_AZ_ENDPOINT=f"http://{addr[AZ_DST]}:10000/devstoreaccount1")
        def count(region, url):
            _, out = in_region(region, "ls", "-r", url)
            return len([l for l in out.splitlines() if l.strip()])
        sk = [skyx, "cp", "-r", "--no-progress", "--sky", state, "--src-region", SRC]
        cases = {}
        for case, region, skyx_dst, rclone_dst, check in (
            ("S3 -> S3", S3_DST, "s3://skyx/data", "DST:rclone/data", "s3://{}/data"),
            ("S3 -> Azurite", AZ_DST, "az://devstoreaccount1/skyx/data", "AZ:rclone/data",
             "az://devstoreaccount1/{}/data"),
        ):
            rows = []
            for label, cmd, env_, bucket in (
                ("skyx cp", sk + ["--dst-region", region, "s3://src/data", skyx_dst], env, "skyx"),
                ("rclone copy --transfers 16", ["rclone", "copy", "--transfers", "16", "SRC:src/data", rclone_dst], rc, "rclone"),
            ):
                wall, _ = run(cmd, env_)
                got = count(region, check.format(bucket))
                if got != n:
                    sys.exit(f"{case}/{label}: {got} of {n} objects at the destination")
                rows.append((label, " ".join(cmd), wall))
            cases[case] = (region, rows)
    finally:
        subprocess.run([skyx, "sky", "down", "--name", name, "--state-dir", state], env=env,
                       capture_output=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = [f"# {n:,} files of 4 KiB between regions of the emulated sky, with distance: skyx and rclone, one run\n",
           f"Machine: {os.cpu_count()} vCPU ({cpu}), {platform.platform()}. Date: {time.strftime('%Y-%m-%d %H:%M')}.",
           f"Sky: {SRC} (source S3; the gateway and every tool run here), {S3_DST} (S3), {AZ_DST} (Azurite);",
           "links at 1/20 of measured throughput, delayed by the measured round trips (user-space delay line).",
           f"Round trips from the gateway: {S3_DST} {ctl[S3_DST]:.0f} ms, {AZ_DST} {ctl[AZ_DST]:.0f} ms; "
           f"{SRC} ↔ {S3_DST} {rtt[(SRC, S3_DST)]:.0f} ms, {SRC} ↔ {AZ_DST} {rtt[(SRC, AZ_DST)]:.0f} ms.",
           "Every process shares these cores. Ratios are objects/s over rclone --transfers 16's in the same case.\n"]
    for case, (region, rows) in cases.items():
        base = next(w for l, _, w in rows if l.startswith("rclone"))
        out.append(f"## {case} ({SRC} → {region})\n\n| tool | wall s | objects/s | vs rclone --transfers 16 |\n|---|---|---|---|")
        for label, cmd, wall in rows:
            out.append(f"| {label} | {wall:.1f} | {n / wall:,.1f} | {base / wall:.2f}x |")
        out.append("\nCommands:\n" + "\n".join(f"- `{cmd}`" for _, cmd, _ in rows) + "\n")
    open(a.out, "w").write("\n".join(out))
    print("\n".join(out))
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
