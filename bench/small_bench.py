#!/usr/bin/env python3
"""skyx, rclone and s5cmd moving the same small files between the same servers, one run:
every case several rounds, the tools in turn (the order rotating each round so none is
always first after the source was written), the median reported with every round.

Each case copies the dataset to a fresh destination with each tool, times it, checks the
destination holds every object, and reports objects per second and the ratio to rclone
(16 transfers). Measures; asserts nothing but that every tool copied everything.
"""
import argparse, os, platform, shutil, statistics, subprocess, sys, tempfile, time

def run(cmd, env=None):
    # What the previous command left for the disk to write is not billed to this one.
    os.sync()
    time.sleep(2)
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall

ALL_CASES = {"local-local", "local-s3", "s3-s3", "s3-azure"}

def filesystem(path):
    """What the local files live on. An ext4 without a journal (this sandbox's root) checks,
    on every inode it hands out, whether the inode was freed in the last 60 s (360 s while its
    table block is dirty) and skips it if so (fs/ext4/ialloc.c, recently_deleted): after the
    previous round's 20,000 files were removed, the next tool's creates spent most of their
    time there (perf: find_get_block_common under ext4_tmpfile, 3-4x the wall time), so the
    tool that ran first after a removal lost, whichever it was."""
    p = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", path], capture_output=True, text=True)
    source, _, kind = p.stdout.strip().partition(" ")
    kind = kind.strip()
    note = f"{kind} on {source}"
    if kind == "ext4":
        try:
            task = open(f"/sys/fs/ext4/{os.path.basename(source)}/journal_task").read().strip()
            note += ", no journal" if task == "<none>" else ", journaled"
        except OSError:
            pass
    return note

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyx", required=True)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3,
                    help="each tool runs this many times, in turn; the median is reported")
    ap.add_argument("--cases", default=",".join(sorted(ALL_CASES)),
                    help="comma-separated subset of: local-local, local-s3, s3-s3, s3-azure")
    ap.add_argument("--work-dir", default=None,
                    help="where the dataset and the local destinations are written (a "
                         "journaled filesystem: see filesystem())")
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit("--rounds: at least 1")
    wanted = set(a.cases.split(","))
    n, skyx = a.files, a.skyx
    work = tempfile.mkdtemp(prefix="skyx-small-", dir=a.work_dir)
    src = f"{work}/src"
    for i in range(n):
        d = f"{src}/d{i // 1000:03}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/f{i:06}", "wb") as f:
            f.write(os.urandom(4096))
    e = os.environ
    s3 = dict(e, AWS_ENDPOINT_URL=e["SKYX_TEST_S3_ENDPOINT"], AWS_ACCESS_KEY_ID=e["SKYX_TEST_S3_ACCESS_KEY"],
              AWS_SECRET_ACCESS_KEY=e["SKYX_TEST_S3_SECRET_KEY"], AWS_REGION="us-east-1",
              AZURE_STORAGE_CONNECTION_STRING=e["SKYX_TEST_AZURE_CONNECTION_STRING"],
              SKYX_STATE_DIR=f"{work}/state")
    # rclone 1.60 (Debian): the sandbox's AWS_CA_BUNDLE breaks its S3 backend; Azurite needs
    # both use_emulator and endpoint (see shared/DEPENDENCIES.md).
    az_endpoint = [kv.split("=", 1)[1] for kv in e["SKYX_TEST_AZURE_CONNECTION_STRING"].split(";") if kv.startswith("BlobEndpoint=")][0]
    rc = {k: v for k, v in s3.items() if k != "AWS_CA_BUNDLE"}
    rc.update(RCLONE_CONFIG_S3_TYPE="s3", RCLONE_CONFIG_S3_PROVIDER="Other",
              RCLONE_CONFIG_S3_ENDPOINT=e["SKYX_TEST_S3_ENDPOINT"],
              RCLONE_CONFIG_S3_ACCESS_KEY_ID=e["SKYX_TEST_S3_ACCESS_KEY"],
              RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=e["SKYX_TEST_S3_SECRET_KEY"],
              RCLONE_CONFIG_S3_REGION="us-east-1", RCLONE_CONFIG_S3_FORCE_PATH_STYLE="true",
              RCLONE_CONFIG_AZ_TYPE="azureblob", RCLONE_CONFIG_AZ_USE_EMULATOR="true",
              RCLONE_CONFIG_AZ_ENDPOINT=az_endpoint)
    s5 = ["s5cmd", "--endpoint-url", e["SKYX_TEST_S3_ENDPOINT"]]
    tag = str(os.getpid())
    def bucket(name):
        b = f"small-{name}-{tag}"
        run([skyx, "mb", f"s3://{b}"], s3)
        return b
    known = set()
    def make(url):
        """Makes the bucket or container `url` the first time it is asked for."""
        if url not in known:
            run([skyx, "mb", url], s3)
            known.add(url)
    def count(url):
        p = subprocess.run([skyx, "ls", "-r", url], capture_output=True, text=True, env=s3)
        return len([l for l in p.stdout.splitlines() if l.strip()])
    srcb = bucket("src")
    run([skyx, "cp", "-r", src, f"s3://{srcb}/data", "--no-progress"], s3)
    sk = [skyx, "cp", "-r", "--no-progress"]
    cases = {}
    def case(name, runs):
        """Runs every tool of `runs` `a.rounds` times, in turn. `runs` is a function of the
        round giving (label, command, env, destination) rows: each round writes to a fresh
        destination, so no round finds another's objects there."""
        if name.replace(" -> ", "-").replace("Azurite", "azure").lower() not in wanted:
            return
        walls = {}
        for r in range(a.rounds):
            rows = runs(r)
            rows = rows[r % len(rows):] + rows[:r % len(rows)]
            for label, cmd, env, dst in rows:
                wall = run(cmd, env)
                got = count(dst) if "://" in dst else sum(len(f) for _, _, f in os.walk(dst))
                if got != n:
                    sys.exit(f"{name}/{label}: {got} of {n} objects at the destination")
                walls.setdefault(label, []).append(wall)
                if "://" not in dst:
                    # Off the disk before the next tool's run (and its sync) starts.
                    shutil.rmtree(dst)
        cases[name] = [(label, " ".join(cmd), statistics.median(walls[label]), walls[label])
                       for label, cmd, *_ in runs(0)]
    case("local -> local", lambda r: [
        ("skyx cp (in-process)", sk + [src, f"{work}/l-skyx"], s3, f"{work}/l-skyx"),
        ("skyx cp --server-side never (agents)", sk + ["--server-side", "never", src, f"{work}/l-agents"], s3, f"{work}/l-agents"),
        ("rclone copy (4 transfers)", ["rclone", "copy", src, f"{work}/l-rclone4"], rc, f"{work}/l-rclone4"),
        ("rclone copy --transfers 16", ["rclone", "copy", "--transfers", "16", src, f"{work}/l-rclone16"], rc, f"{work}/l-rclone16"),
        ("cp -r", ["cp", "-r", src, f"{work}/l-cp"], None, f"{work}/l-cp"),
    ])
    def buckets(r, *names):
        """One bucket per name for round `r`, made the first time the round is asked for."""
        made = [f"small-{name}-{tag}-r{r}" for name in names]
        for b in made:
            make(f"s3://{b}")
        return made
    def up(r):
        b1, b2, b3 = buckets(r, "up-skyx", "up-rclone", "up-s5cmd")
        return [
            ("skyx cp", sk + [src, f"s3://{b1}/data"], s3, f"s3://{b1}/data"),
            ("rclone copy --transfers 16", ["rclone", "copy", "--transfers", "16", src, f"s3:{b2}/data"], rc, f"s3://{b2}/data"),
            ("s5cmd cp", s5 + ["cp", f"{src}/", f"s3://{b3}/data/"], rc, f"s3://{b3}/data"),
        ]
    case("local -> S3", up)
    def s3_s3(r):
        b1, b2, b3, b4 = buckets(r, "s3-skyx", "s3-agents", "s3-rclone", "s3-s5cmd")
        return [
            ("skyx cp (server-side)", sk + [f"s3://{srcb}/data", f"s3://{b1}/data"], s3, f"s3://{b1}/data"),
            ("skyx cp --server-side never (agents)", sk + ["--server-side", "never", f"s3://{srcb}/data", f"s3://{b2}/data"], s3, f"s3://{b2}/data"),
            ("rclone copy --transfers 16", ["rclone", "copy", "--transfers", "16", f"s3:{srcb}/data", f"s3:{b3}/data"], rc, f"s3://{b3}/data"),
            ("s5cmd cp", s5 + ["cp", f"s3://{srcb}/data/*", f"s3://{b4}/data/"], rc, f"s3://{b4}/data"),
        ]
    case("S3 -> S3", s3_s3)
    def s3_az(r):
        c1, c2 = (f"small-{name}-{tag}-r{r}" for name in ("az-skyx", "az-rclone"))
        for c in (c1, c2):
            make(f"az://devstoreaccount1/{c}")
        return [
            ("skyx cp", sk + [f"s3://{srcb}/data", f"az://devstoreaccount1/{c1}/data"], s3, f"az://devstoreaccount1/{c1}/data"),
            ("rclone copy --transfers 16", ["rclone", "copy", "--transfers", "16", f"s3:{srcb}/data", f"az:{c2}/data"], rc, f"az://devstoreaccount1/{c2}/data"),
        ]
    case("S3 -> Azurite", s3_az)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = [f"# {n:,} files of 4 KiB: skyx, rclone and s5cmd on the same servers, one run\n",
           f"Machine: {os.cpu_count()} vCPU ({cpu}), {platform.platform()}. Date: {time.strftime('%Y-%m-%d %H:%M')}.",
           "Servers: s3s-fs and Azurite on loopback (deploy/test-servers.sh). Every process shares these cores:",
           "compare rows of this run, not machines. Ratios are objects/s over rclone --transfers 16's in the same case.",
           "Before each timed command the disk is synced and left 2 s to settle.",
           f"Local files (the dataset, local destinations): {filesystem(work)}.\n"]
    for name, rows in cases.items():
        base = next((w for l, _, w, _ in rows if l == "rclone copy --transfers 16"), None)
        # rclone's default (4 transfers), where the case ran it.
        plain = next((w for l, _, w, _ in rows if l == "rclone copy (4 transfers)"), None)
        rounds = len(rows[0][3])
        head = "wall s" if rounds == 1 else f"wall s (median of {rounds}, in turn)"
        out.append(f"## {name}\n\n| tool | {head} | objects/s | vs rclone --transfers 16 |"
                   + (" vs rclone (4 transfers) |" if plain else "")
                   + ("" if rounds == 1 else " every round, s |") + "\n|---|---|---|---|"
                   + ("---|" if plain else "") + ("" if rounds == 1 else "---|"))
        for label, cmd, wall, walls in rows:
            ratio = f"{base / wall:.2f}x" if base else "-"
            ratio += f" | {plain / wall:.2f}x" if plain else ""
            every = "" if rounds == 1 else " " + ", ".join(f"{w:.2f}" for w in walls) + " |"
            out.append(f"| {label} | {wall:.2f} | {n / wall:,.0f} | {ratio} |{every}")
        out.append("\nCommands:\n" + "\n".join(f"- `{cmd}`" for _, cmd, _, _ in rows) + "\n")
    # A run of some cases leaves the results of a full run alone.
    path = a.out
    if wanted != ALL_CASES:
        stem, ext = os.path.splitext(a.out)
        path = f"{stem}-{'+'.join(sorted(wanted))}{ext}"
    open(path, "w").write("\n".join(out))
    print("\n".join(out))
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
