//! The delay line: distance for the sky's links, in user space.
//!
//! This kernel has no `netem` (nor `fq` or `etf`), so links cannot be given delay in the
//! kernel. Instead each link's two ends are TUN devices ([`crate::spec::SkySpec::network_commands`]),
//! and this process joins them, as Mahimahi's delay shell does: every packet one end's stack
//! sends is read here, held for the link's one-way delay, and written into the other end's
//! stack. The `tbf` shaping stays in the kernel, on each TUN device's egress, so a packet is
//! shaped first and delayed after, as on a real path (serialisation at the bottleneck, then
//! propagation).
//!
//! One thread per direction: it waits (`ppoll`, to the microsecond) for a packet or for the
//! oldest held packet's time, reads every packet waiting, and writes every packet due. Threads
//! run with a real-time priority when they can, so a busy machine delays packets no longer than
//! asked. A direction holds at most [`HELD_BYTES`]; beyond, packets are dropped as a full router
//! queue would.
//!
//! The one module of the workspace with `unsafe`: the system calls above, each with the
//! reason it is sound.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SkyError;
use crate::spec::{DelayedLink, TunEnd};

/// Bytes one direction holds at most: the delay × rate of the fastest link at any sensible
/// scale (1 Gbit/s × 250 ms ≈ 31 MB).
pub const HELD_BYTES: usize = 32 << 20;

/// Largest packet a TUN device hands over (its MTU is 1500; GSO is not enabled).
const MAX_PACKET: usize = 65_536;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn os_error(what: String) -> impl FnOnce(io::Error) -> SkyError {
    move |source| SkyError::Io { what, source }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Enters the network namespace `ns` (`None`: the one `home` is) on this thread.
fn enter(ns: Option<&str>, home: &File) -> io::Result<()> {
    let fd = match ns {
        Some(ns) => File::open(Path::new("/run/netns").join(ns))?,
        None => home.try_clone()?,
    };
    // SAFETY: setns on a valid namespace descriptor only changes this thread's namespace.
    check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// Attaches to the TUN device `end` (created persistent by `ip tuntap add`), non-blocking.
fn attach(end: &TunEnd, home: &File) -> io::Result<OwnedFd> {
    enter(end.namespace.as_deref(), home)?;
    let opened = (|| {
        let path = c"/dev/net/tun";
        // SAFETY: a valid C string path; the descriptor is owned below.
        let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        let name = end.dev.as_bytes();
        if name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "device name too long",
            ));
        }
        req.name[..name.len()].copy_from_slice(name);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` lays out.
        check(unsafe { libc::ioctl(owned.as_raw_fd(), TUNSETIFF, &mut req) })?;
        Ok(owned)
    })();
    // Back home whatever happened: the next device may be in another namespace.
    enter(None, home)?;
    opened
}

/// What one direction does with its packets: hold each until its time, within a byte budget.
struct Held {
    delay: Duration,
    queue: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    dropped: u64,
}

impl Held {
    fn new(delay: Duration) -> Held {
        Held {
            delay,
            queue: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Holds `packet`, read at `now`, until `now + delay` (dropped when the budget is spent).
    fn hold(&mut self, now: Instant, packet: Vec<u8>) {
        if self.bytes + packet.len() > HELD_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += packet.len();
        self.queue.push_back((now + self.delay, packet));
    }

    /// The oldest packet, if its time has come.
    fn due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.front().is_some_and(|(at, _)| *at <= now) {
            let (_, packet) = self.queue.pop_front()?;
            self.bytes -= packet.len();
            return Some(packet);
        }
        None
    }

    /// How long until the oldest packet is due (`None`: nothing held).
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.queue
            .front()
            .map(|(at, _)| at.saturating_duration_since(now))
    }
}

/// Gives this thread a real-time priority, if allowed: a delayed packet then leaves on time
/// even while every core is busy with the copy the sky carries.
fn prefer_this_thread() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// Carries packets from `from` to `to`, each `delay` after it was read. Returns only on an
/// error reading `from`.
fn carry(from: &OwnedFd, to: &OwnedFd, delay: Duration) -> io::Error {
    prefer_this_thread();
    let mut held = Held::new(delay);
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let mut poll = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = held.wait(Instant::now()).map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let timeout_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one valid pollfd; the timeout outlives the call.
        let ready = unsafe { libc::ppoll(&mut poll, 1, timeout_ptr, std::ptr::null()) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return e;
            }
        }
        if ready > 0 && poll.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            // The device went away (its namespace deleted): nothing will come again.
            return io::Error::other(format!(
                "the device failed (poll events {:#x})",
                poll.revents
            ));
        }
        if ready > 0 && poll.revents & libc::POLLIN != 0 {
            loop {
                match read_packet(from.as_raw_fd(), &mut buf) {
                    Ok(Some(n)) => held.hold(Instant::now(), buf[..n].to_vec()),
                    Ok(None) => break,
                    Err(e) => return e,
                }
            }
        }
        let now = Instant::now();
        while let Some(packet) = held.due(now) {
            // A packet the other stack refuses is lost, as on a wire.
            // SAFETY: writes `packet.len()` bytes from a live buffer to an owned descriptor.
            let _ = unsafe { libc::write(to.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        }
    }
}

/// One packet from a non-blocking TUN descriptor (`None`: none waiting).
fn read_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: reads at most `buf.len()` bytes into a live buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Runs the delay line for `links`: attaches to every TUN device, writes `ready` (so whoever
/// started it knows the links carry packets), and carries packets until the process is
/// stopped. Returns only with the reason it could not go on.
pub fn run(links: &[DelayedLink], ready: &Path) -> Result<(), SkyError> {
    let home = File::open("/proc/thread-self/ns/net")
        .map_err(os_error("opening this thread's network namespace".into()))?;
    let mut directions = Vec::new();
    for link in links {
        let a = Arc::new(attach(&link.a, &home).map_err(os_error(format!(
            "attaching to {} in {}",
            link.a.dev,
            link.a.namespace.as_deref().unwrap_or("the root namespace")
        )))?);
        let b = Arc::new(attach(&link.b, &home).map_err(os_error(format!(
            "attaching to {} in {}",
            link.b.dev,
            link.b.namespace.as_deref().unwrap_or("the root namespace")
        )))?);
        let delay = Duration::from_secs_f64(link.one_way_ms.max(0.0) / 1e3);
        let name = |from: &TunEnd, to: &TunEnd| {
            format!(
                "{}/{} -> {}/{}",
                from.namespace.as_deref().unwrap_or("root"),
                from.dev,
                to.namespace.as_deref().unwrap_or("root"),
                to.dev
            )
        };
        directions.push((name(&link.a, &link.b), a.clone(), b.clone(), delay));
        directions.push((name(&link.b, &link.a), b, a, delay));
    }
    let (tx, rx) = std::sync::mpsc::channel::<(String, io::Error)>();
    for (name, from, to, delay) in directions {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("delay".into())
            .spawn(move || {
                let e = carry(&from, &to, delay);
                let _ = tx.send((name, e));
            })
            .map_err(os_error("starting a delay thread".into()))?;
    }
    std::fs::write(ready, b"ready\n").map_err(os_error(format!("writing {}", ready.display())))?;
    tracing::info!(links = links.len(), "the delay line carries packets");
    match rx.recv() {
        Ok((name, e)) => Err(SkyError::Io {
            what: format!("carrying packets {name}"),
            source: e,
        }),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_leave_in_order_after_their_delay_and_a_full_line_drops() {
        let t0 = Instant::now();
        let mut held = Held::new(Duration::from_millis(100));
        assert_eq!(held.wait(t0), None);
        held.hold(t0, vec![1]);
        held.hold(t0 + Duration::from_millis(10), vec![2]);
        assert_eq!(held.wait(t0), Some(Duration::from_millis(100)));
        assert_eq!(held.due(t0 + Duration::from_millis(99)), None);
        assert_eq!(held.due(t0 + Duration::from_millis(100)), Some(vec![1]));
        assert_eq!(held.due(t0 + Duration::from_millis(100)), None);
        assert_eq!(
            held.wait(t0 + Duration::from_millis(100)),
            Some(Duration::from_millis(10))
        );
        assert_eq!(held.due(t0 + Duration::from_secs(1)), Some(vec![2]));
        held.hold(t0, vec![0; HELD_BYTES]);
        held.hold(t0, vec![0; 1]);
        assert_eq!(held.dropped, 1);
        assert_eq!(held.bytes, HELD_BYTES);
    }
}
