//! Socket calls std does not offer, declared against the C library std already links (the crate
//! has no `libc` dependency): receive timestamps, `MSG_TRUNC`, and another process's CPU clock.
//! Little-endian 64-bit Linux only; elsewhere plain reads without timestamps.

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_endian = "little"))]
pub use linux::{enable_rx_timestamps, process_cpu_s, receive};

#[cfg(all(target_os = "linux", target_pointer_width = "64", target_endian = "little"))]
mod linux {
    use std::ffi::{c_int, c_void};
    use std::io;
    use std::os::fd::AsRawFd;

    use mio::net::TcpStream;

    const SOL_SOCKET: c_int = 1;
    /// Also the type of its control message (SCM_TIMESTAMPNS): a struct timespec, on
    /// CLOCK_REALTIME, of when the last segment a read consumed reached the socket.
    const SO_TIMESTAMPNS: c_int = 35;
    const MSG_TRUNC: c_int = 0x20;
    const MSG_DONTWAIT: c_int = 0x40;

    #[repr(C)]
    struct IoVec {
        base: *mut c_void,
        len: usize,
    }

    /// struct msghdr.
    #[repr(C)]
    struct MsgHdr {
        name: *mut c_void,
        namelen: u32,
        iov: *mut IoVec,
        iovlen: usize,
        control: *mut c_void,
        controllen: usize,
        flags: c_int,
    }

    /// struct timespec.
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }

    unsafe extern "C" {
        fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
        fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
        fn clock_getcpuclockid(pid: c_int, clock: *mut c_int) -> c_int;
        fn clock_gettime(clock: c_int, ts: *mut Timespec) -> c_int;
    }

    /// CPU seconds (user + system, every thread) of a process, to the nanosecond: /proc's
    /// figures come in 10 ms ticks, too coarse for a few hundred milliseconds of relay work.
    pub fn process_cpu_s(pid: u32) -> Option<f64> {
        let mut clock: c_int = 0;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: pointers to live locals of the types the C library declares (clockid_t is int).
        let ok =
            unsafe { clock_getcpuclockid(pid as c_int, &raw mut clock) == 0 && clock_gettime(clock, &raw mut ts) == 0 };
        ok.then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
    }

    pub fn enable_rx_timestamps(sock: &TcpStream) -> bool {
        let on: c_int = 1;
        // SAFETY: a pointer to a live c_int and its size.
        unsafe { setsockopt(sock.as_raw_fd(), SOL_SOCKET, SO_TIMESTAMPNS, (&raw const on).cast(), 4) == 0 }
    }

    /// Reads into `buf`, or with `discard` drops up to `buf.len()` bytes in the kernel without
    /// copying them (`MSG_TRUNC`, tcp(7)). Also returns the receive timestamp (ns since the
    /// Unix epoch) when the socket has them enabled.
    pub fn receive(sock: &mut TcpStream, buf: &mut [u8], discard: bool) -> io::Result<(usize, Option<i128>)> {
        let mut control = [0u64; 8];
        let mut iov = IoVec { base: buf.as_mut_ptr().cast(), len: buf.len() };
        let mut msg = MsgHdr {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: &raw mut iov,
            iovlen: 1,
            control: control.as_mut_ptr().cast(),
            controllen: size_of_val(&control),
            flags: 0,
        };
        let flags = MSG_DONTWAIT | if discard { MSG_TRUNC } else { 0 };
        // SAFETY: the descriptor stays open while `sock` is borrowed; every pointer in `msg`
        // refers to a live local or to `buf`, with its true length, and recvmsg writes
        // within those only.
        let n = unsafe { recvmsg(sock.as_raw_fd(), &raw mut msg, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, super::timestamp(&control, msg.controllen)))
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")))]
pub fn enable_rx_timestamps(_sock: &mio::net::TcpStream) -> bool {
    false
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")))]
pub fn process_cpu_s(_pid: u32) -> Option<f64> {
    None
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")))]
pub fn receive(
    sock: &mut mio::net::TcpStream,
    buf: &mut [u8],
    _discard: bool,
) -> std::io::Result<(usize, Option<i128>)> {
    std::io::Read::read(sock, buf).map(|n| (n, None))
}

/// Finds SCM_TIMESTAMPNS among control messages laid out as 64-bit little-endian words:
/// struct cmsghdr is (size_t len, int level, int type), its data starts 16 bytes in.
#[cfg_attr(not(all(target_os = "linux", target_pointer_width = "64", target_endian = "little")), allow(dead_code))]
pub fn timestamp(control: &[u64], len: usize) -> Option<i128> {
    const SOL_SOCKET: u64 = 1;
    const SCM_TIMESTAMPNS: u64 = 35;
    let words = (len / 8).min(control.len());
    let mut at = 0;
    while at + 2 <= words {
        let cmsg_len = control[at] as usize;
        if cmsg_len < 16 {
            break;
        }
        let (level, kind) = (control[at + 1] & 0xffff_ffff, control[at + 1] >> 32);
        if level == SOL_SOCKET && kind == SCM_TIMESTAMPNS && cmsg_len >= 32 && at + 4 <= words {
            let (sec, nsec) = (control[at + 2] as i64, control[at + 3] as i64);
            return Some(sec as i128 * 1_000_000_000 + nsec as i128);
        }
        at += cmsg_len.div_ceil(8);
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};
    use std::time::{Duration, Instant};

    use mio::net::TcpStream;

    use crate::sys;

    #[test]
    fn another_process_cpu_clock_counts_its_work() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The loop takes some CPU, then the shell sleeps: the clock rises, then stands still.
        let mut last = 0.0;
        loop {
            let Some(now) = sys::process_cpu_s(child.id()) else {
                let _ = child.kill();
                let _ = child.wait();
                return; // not Linux x86-64-like: /proc ticks are used instead
            };
            if now > 0.01 && now == last {
                break;
            }
            assert!(Instant::now() < deadline, "the child's CPU clock did not settle ({now} s)");
            last = now;
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn timestamps_are_found_among_control_messages() {
        // Another SOL_SOCKET message first (24 bytes: a header and 8 of data), then SCM_TIMESTAMPNS.
        let control = [24, 1 | (29 << 32), 7, 32, 1 | (35 << 32), 1_700_000_000, 250, 0];
        assert_eq!(sys::timestamp(&control, 56), Some(1_700_000_000_000_000_250));
        assert_eq!(sys::timestamp(&control, 48), None, "cut short");
        assert_eq!(sys::timestamp(&[0; 8], 64), None);
    }

    /// A connected loopback pair: (mio side, std side).
    fn socket_pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        (TcpStream::from_std(client), server)
    }

    /// Calls `receive` until it returns bytes (the data may take a moment on loopback).
    fn receive_some(sock: &mut TcpStream, buf: &mut [u8], discard: bool) -> (usize, Option<i128>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match sys::receive(sock, buf, discard) {
                Ok(got) => return got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("receive: {e}"),
            }
        }
    }

    #[test]
    fn receive_reads_discards_and_stamps_on_a_real_socket() {
        let (mut sock, mut peer) = socket_pair();
        let mut buf = vec![0; 65536];
        if sys::enable_rx_timestamps(&sock) {
            // The kernel starts stamping packets shortly after the first socket asks for it.
            let deadline = Instant::now() + Duration::from_secs(5);
            let stamp = loop {
                peer.write_all(b"x").unwrap();
                let (n, stamp) = receive_some(&mut sock, &mut buf, false);
                assert_eq!(&buf[..n], b"x");
                if let Some(stamp) = stamp {
                    break stamp;
                }
                assert!(Instant::now() < deadline, "no receive timestamp");
                std::thread::sleep(Duration::from_millis(5));
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
            assert!((0..5_000_000_000).contains(&(now - stamp)), "stamp {stamp} vs now {now}");
        }
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        peer.write_all(&data).unwrap();
        let (n, _) = receive_some(&mut sock, &mut buf[..10], false);
        assert_eq!(&buf[..n], &data[..n]);
        // Discard up to byte 50 000 (in pieces, as they come); the next byte read is the one after.
        let mut skipped = n;
        while skipped < 50_000 {
            skipped += receive_some(&mut sock, &mut buf[..50_000 - skipped], true).0;
        }
        let (n, _) = receive_some(&mut sock, &mut buf[..1], false);
        assert_eq!((n, buf[0]), (1, data[50_000]));
    }
}
