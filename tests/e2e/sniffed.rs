//! A sniffer on the links of VMs booted as they would boot in the cloud (`booted`): tcpdump
//! records every packet to and from the VMs' addresses (the gateway's control connections,
//! the agents' hops, the bootstrap's downloads) while a copy runs from a source VM through a
//! relay VM to a sink VM, and the test reads the capture as a stranger on the path would. With
//! chunks sealed (the default) it finds no byte of the data, no VM's boot token, and no control
//! connection that is not TLS from its first byte; with `--encrypt off` the same sniffer finds
//! the data, which shows it would have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::booted::{Booted, settle};
use crate::stores::Scratch;
use crate::util::{stderr, stdout, strs};

/// The agents' control port (`skyx_provision::bootstrap::CONTROL_PORT`).
const CONTROL_PORT: u16 = 7443;
/// Bytes of each sample of the data the capture is searched for.
const SAMPLE: usize = 32;

/// tcpdump on every interface of this host's namespace (the VMs' bridge and the host ends of
/// their links), keeping whole packets of what `filter` (a pcap filter) selects.
struct Sniffer {
    child: Child,
    pcap: PathBuf,
}

impl Sniffer {
    fn start(dir: &Path, name: &str, filter: &str) -> Sniffer {
        let pcap = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.tcpdump.log"));
        // `-B`: a 64 MiB capture buffer, so that a loaded machine drops few packets.
        // `-Z root`: Debian's tcpdump would otherwise become its own user before opening the
        // file, which it then may not write.
        let child = Command::new("tcpdump")
            .args([
                "-i", "any", "-s", "0", "-U", "-n", "-Z", "root", "-B", "65536", "-w",
            ])
            .arg(&pcap)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tcpdump (installed by deploy/test-servers.sh)");
        // It says so on stderr once its capture is open: nothing sent before is missed.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(Instant::now() < deadline, "tcpdump did not start: {log:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sniffer { child, pcap }
    }

    /// Stops the capture (tcpdump writes out what it holds on SIGINT) and reads it.
    fn stop(mut self) -> Vec<Segment> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        self.child.wait().unwrap();
        segments(&std::fs::read(&self.pcap).unwrap())
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection: its client's address and port, its server's address.
type Flow = ([u8; 4], u16, [u8; 4]);

/// One TCP segment with a payload or a SYN, as captured.
struct Segment {
    from: ([u8; 4], u16),
    to: ([u8; 4], u16),
    seq: u32,
    /// A connection's opening (SYN without ACK): its `seq` is the client's first.
    opens: bool,
    payload: Vec<u8>,
}

/// The TCP segments with payloads, and the connections' openings, of a pcap file (Linux
/// cooked captures, v1 or v2, of IPv4), in capture order.
fn segments(pcap: &[u8]) -> Vec<Segment> {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    assert!(
        matches!(u32_at(pcap, 0), 0xa1b2_c3d4 | 0xa1b2_3c4d),
        "not a little-endian pcap file"
    );
    // LINKTYPE_LINUX_SLL (16-byte header, protocol last) or LINUX_SLL2 (20, protocol first).
    let (link_len, proto_at) = match u32_at(pcap, 20) {
        113 => (16, 14),
        276 => (20, 0),
        other => panic!("link type {other}: not a capture of `-i any`"),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(pcap, at + 8) as usize;
        let packet = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        if packet.len() < link_len + 20 || be16(packet, proto_at) != 0x0800 {
            continue;
        }
        let ip = &packet[link_len..];
        let ihl = usize::from(ip[0] & 0xf) * 4;
        // Segments the kernel has yet to cut up (GSO) may say 0 for their length.
        let total = match usize::from(be16(ip, 2)) {
            0 => ip.len(),
            n => n.min(ip.len()),
        };
        if ip[9] != 6 || total < ihl + 20 {
            continue;
        }
        let tcp = &ip[ihl..total];
        let data_at = usize::from(tcp[12] >> 4) * 4;
        let opens = tcp[13] & 0x12 == 0x02;
        if tcp.len() <= data_at && !opens {
            continue;
        }
        out.push(Segment {
            from: (ip[12..16].try_into().unwrap(), be16(tcp, 0)),
            to: (ip[16..20].try_into().unwrap(), be16(tcp, 2)),
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            opens,
            payload: tcp.get(data_at..).unwrap_or_default().to_vec(),
        });
    }
    out
}

/// How many of `needles` (8 bytes or more) occur in `haystack`: one pass, keyed by each
/// needle's first 8 bytes.
fn found(haystack: &[u8], needles: &[Vec<u8>]) -> usize {
    let mut by_prefix: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, n) in needles.iter().enumerate() {
        by_prefix
            .entry(u64::from_le_bytes(n[..8].try_into().unwrap()))
            .or_default()
            .push(i);
    }
    let mut seen = vec![false; needles.len()];
    for at in 0..haystack.len().saturating_sub(7) {
        let prefix = u64::from_le_bytes(haystack[at..at + 8].try_into().unwrap());
        if let Some(candidates) = by_prefix.get(&prefix) {
            for &i in candidates {
                seen[i] |= haystack[at..].starts_with(&needles[i]);
            }
        }
    }
    seen.iter().filter(|s| **s).count()
}

/// Bytes no compressor shrinks (xorshift64), so a copy sent in the clear shows them as they are.
fn random_bytes(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn a_sniffer_on_the_vms_links_sees_no_token_and_no_data_unless_encryption_is_off() {
    const BRIDGE: &str = "10.209.0.0/16";
    const PUBLIC: &str = "100.103.0.0/24";
    let scratch = Scratch::new("vm-sniffed");
    let gce = Booted::start(&scratch, "10.209.0.1/16", &[("gce", PUBLIC)]);
    let data = random_bytes(3_000_000, 0x5eed_5eed_5eed_5eed);
    let samples: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            let at = i * (data.len() - SAMPLE) / 63;
            data[at..at + SAMPLE].to_vec()
        })
        .collect();
    let src = scratch.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("records.bin"), &data).unwrap();
    // Every TCP segment to or from the VMs but the agent's download (hundreds of MB of a
    // binary anyone may fetch), which would only slow the search.
    let files_port = gce
        .agent_url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let filter = format!("tcp and (net {BRIDGE} or net {PUBLIC}) and not port {files_port}");
    let copy = |project: &str, extra: &[&str]| {
        let dst = scratch.dir.join(project);
        let sniffer = Sniffer::start(&scratch.dir, project, &filter);
        let (src, dst_arg) = (src.display().to_string(), dst.display().to_string());
        let mut args = vec![
            "cp",
            "-r",
            &src,
            &dst_arg,
            "--src-region",
            "gcp:us-east1-b",
            "--dst-region",
            "gcp:europe-west1-b",
            "--via",
            "gcp:us-west1-a",
            "--max-vms-per-region",
            "1",
            // As they are: what a sniffer would find of data sent in the clear is the data.
            "--compress",
            "off",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        let out = scratch.skyx(&strs(&gce.on_gce(project, &args)), &[]);
        let captured = sniffer.stop();
        assert!(
            out.status.success(),
            "{}\n{}\n{}",
            stdout(&out),
            stderr(&out),
            gce.vm_logs()
        );
        assert!(stdout(&out).contains("gcp:us-west1-a"), "{}", stdout(&out));
        assert_eq!(std::fs::read(dst.join("records.bin")).unwrap(), data);
        assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
        captured
    };

    // Sealed: the sniffer saw the data go by (between the VMs' public addresses: the hops),
    // and none of it, no boot token, and no control connection in the clear.
    let sealed = copy("sniffed-sealed", &[]);
    let vm = |ip: [u8; 4]| ip[..3] == [100, 103, 0];
    let mut hops: BTreeMap<([u8; 4], [u8; 4]), usize> = BTreeMap::new();
    for s in sealed.iter().filter(|s| vm(s.from.0) && vm(s.to.0)) {
        *hops.entry((s.from.0, s.to.0)).or_default() += s.payload.len();
    }
    // Both hops (source -> relay, relay -> sink) carried the whole of it past the sniffer
    // (each seen on two of the bridge's ports, so a few dropped packets do not matter).
    let whole = hops.values().filter(|&&n| n >= data.len()).count();
    assert!(
        whole >= 2,
        "the sniffer saw too little of the hops: {hops:?}"
    );
    let wire: Vec<u8> = sealed.iter().flat_map(|s| s.payload.clone()).collect();
    assert_eq!(found(&wire, &samples), 0, "plaintext on the VMs' links");
    let tokens: Vec<Vec<u8>> = (gce.vm_etc("skyx/token").iter())
        .map(|t| t.trim().as_bytes().to_vec())
        .collect();
    assert_eq!(tokens.len(), 3, "three VMs' boot tokens: {tokens:?}");
    assert!(tokens.iter().all(|t| t.len() >= 32), "{tokens:?}");
    assert_eq!(found(&wire, &tokens), 0, "a VM's boot token on its link");
    // The first bytes the client sent on each connection to a control port whose opening
    // the sniffer saw: the segment right after the SYN.
    let opened: BTreeMap<Flow, u32> = (sealed.iter())
        .filter(|s| s.opens && s.to.1 == CONTROL_PORT)
        .map(|s| ((s.from.0, s.from.1, s.to.0), s.seq.wrapping_add(1)))
        .collect();
    let mut first: BTreeMap<Flow, &[u8]> = BTreeMap::new();
    for s in sealed.iter().filter(|s| s.to.1 == CONTROL_PORT) {
        let flow = (s.from.0, s.from.1, s.to.0);
        if opened.get(&flow) == Some(&s.seq) && !s.payload.is_empty() {
            first.entry(flow).or_insert(&s.payload);
        }
    }
    assert!(
        first.len() >= 3,
        "control connections seen opening: {}",
        first.len()
    );
    for (flow, bytes) in &first {
        // A TLS record of the handshake (a ClientHello) and nothing before it.
        assert_eq!(
            bytes.get(..2),
            Some(&[0x16, 0x03][..]),
            "control connection {flow:?} not TLS"
        );
    }

    // The same copy with chunks in the clear: the sniffer finds the data (all of it is sent
    // twice, so a packet it missed cannot hide every sample).
    let clear = copy("sniffed-clear", &["--encrypt", "off"]);
    let wire: Vec<u8> = clear.iter().flat_map(|s| s.payload.clone()).collect();
    assert!(
        found(&wire, &samples) >= samples.len() / 2,
        "the sniffer missed data sent in the clear: {} of {}",
        found(&wire, &samples),
        samples.len()
    );
}
