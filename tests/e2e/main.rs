//! End-to-end tests of the `skyx` binaries, run as a user would run them.
//!
//! Modules:
//! - `plan`: `skyx plan` output, JSON schema, Graphviz, exit codes and error messages.
//! - `aws_cli`: `cp`/`sync` paths, filters, markers, links and `--delete` against the AWS CLI
//!   on the same bucket (differential), and the deliberate differences.
//! - `azure_vms`: `skyx cp --provider azure` and `skyx sweep --provider azure` against the
//!   Resource Manager contract server: settings checked first, nothing left after.
//! - `booted`: fixtures for `vm_boot` (clouds whose VMs boot as namespaces, stores on their
//!   bridge).
//! - `catalog`: `skyx catalog` inspection and user-supplied grid files.
//! - `check`: `skyx check` by checksum and by `--download`, every kind of difference named.
//! - `clean_failures`: faults from outside the process on a route with a relay (a source
//!   rewritten mid-copy, a write the destination refuses, a store outage behind a proxy, a
//!   frozen relay): data intact or absent, causes named, no hop paying for a sink's trouble.
//! - `cp`: `skyx cp` between every pair of store kinds through a relay, 10,000 small objects,
//!   a 2 GiB object, QUIC, filters, dry runs.
//! - `cp_faults`: a relay killed mid-transfer, corrupted frames, the gateway killed and the copy
//!   resumed, bad input (malformed URLs, missing buckets and paths, wrong credentials).
//! - `ends`: each end its own account: named remotes and `--src-*`/`--dst-*` flags across two
//!   S3 servers and two Azure accounts, anonymous reads, and per-end flags that do not fit.
//! - `ec2`: `skyx cp --provider ec2` against moto's EC2 server: settings checked before any VM
//!   starts, and no VM outliving the copy.
//! - `gce`: `skyx cp --provider gcp` and `skyx sweep --provider gcp` against the Compute
//!   Engine contract server: the same, and a sweep that leaves other jobs' VMs.
//! - `gcs_on_gce`: a sink agent on a booted GCE VM writing GCS as the VM's service account
//!   (a token from its metadata server, checked by a GCS emulator that takes no other).
//! - `keys`: hostile source keys (`..`, `//`, `.`) never written outside a local destination.
//! - `metadata`: system properties, user metadata and mtime across S3, Azure, GCS and local
//!   paths, written and read back by the AWS CLI; a static site's Content-Types; overrides.
//! - `moto`: moto's S3 server as a store that keeps any key as given.
//! - `resume`: an interrupted `sync` resumed, a rerun without `--resume` keeping landed parts.
//! - `run`: `skyx run` planning (the shipped example, bad specs) and a three-region pipeline
//!   executed, killed and resumed, and re-planned after a capacity failure.
//! - `run_ray`: `skyx run --compute ray` against two real Ray heads: stages as Ray jobs, a
//!   stage no node fits re-planned, a killed gateway's job followed on resume, Ctrl-C.
//! - `sky`: the emulated sky brought up, every link's round trip (`ping`) and goodput
//!   (`iperf3`) and its measured grid against what it was built to be, an overlay copy between
//!   two regions' stores through a third, and a teardown that leaves nothing.
//! - `sky_links`: the `ping` and `iperf3` checks of every link of a sky.
//! - `provider_conformance`: the provider conformance suite against EC2 (moto), GCE and Azure
//!   (contract servers), every VM booted as a network namespace.
//! - `proxy`: a TCP proxy that takes a store server away (reset, refused) for a while.
//! - `sniffed`: tcpdump on the links of booted GCE VMs while a copy runs through a relay: no
//!   data, boot token or cleartext control connection on the wire (and the data, with
//!   `--encrypt off`).
//! - `stores`: fixtures for the above (servers, buckets, datasets, byte-for-byte checks).
//! - `sync_modes`: `--size-only`, `--checksum`, `--update`, `--no-clobber`, `--max-delete`,
//!   `--files-from`, size and age bounds.
//! - `throttle`: a destination that throttles (503 SlowDown) and refuses one upload, through
//!   a proxy that answers as S3 does: every other object lands.
//! - `vm_boot`: `skyx cp --provider gcp` through a relay, every agent on a VM the contract
//!   server boots as a network namespace from the startup script the provider sent (metadata
//!   server, own mount view, the pinned agent downloaded and checked).
//! - `tidy`: the layout's rules (dependency direction, pure modules, headers, no environment
//!   reads or exits in libraries, file length, no import cycles), each a test.

mod aws_cli;
mod azure_vms;
mod booted;
mod catalog;
mod check;
mod clean_failures;
mod cp;
mod cp_faults;
mod ec2;
mod ends;
mod gce;
mod gcs_on_gce;
mod keys;
mod limits;
mod metadata;
mod moto;
mod plan;
mod provider_conformance;
mod proxy;
mod resume;
mod run;
mod run_ray;
mod run_ray_launch;
mod server_side;
mod sky;
mod sky_broadcast;
mod sky_links;
mod sniffed;
mod stores;
mod sync_modes;
mod throttle;
mod tidy;
mod util;
mod vm_boot;
mod write_options;
