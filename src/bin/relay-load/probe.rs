//! Readings from /proc: the server's CPU time and memory, our own CPU time and descriptor limit.

/// Readings of the server process.
#[derive(Default, Clone, Copy)]
pub struct ServerProbe {
    pub cpu_s: Option<f64>,
    pub rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

/// USER_HZ from the auxiliary vector (AT_CLKTCK); Linux reports 100 almost everywhere.
fn clock_ticks() -> f64 {
    const AT_CLKTCK: usize = 17;
    const W: usize = std::mem::size_of::<usize>();
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(2 * W)
        .map(|pair| {
            let key = usize::from_ne_bytes(pair[..W].try_into().expect("word"));
            let value = usize::from_ne_bytes(pair[W..].try_into().expect("word"));
            (key, value)
        })
        .find(|&(key, value)| key == AT_CLKTCK && value > 0)
        .map_or(100.0, |(_, value)| value as f64)
}

/// User + system CPU seconds of a process (`pid` may be "self"): from its CPU clock where the
/// platform gives one (nanoseconds), else from /proc (10 ms ticks).
pub fn proc_cpu_s(pid: &str) -> Option<f64> {
    let id = if pid == "self" { std::process::id() } else { pid.parse().ok()? };
    crate::sys::process_cpu_s(id).or_else(|| proc_stat_cpu_s(pid))
}

fn proc_stat_cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

pub fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

pub fn fd_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}
