//! Medians, percentiles and CPU time: the arithmetic of the figures.
use std::time::Duration;

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The value at `p` (0..=1) of sorted durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU seconds a process's threads have run so far: the scheduler's exact run time of each
/// (/proc/<pid>/task/*/schedstat, in nanoseconds), not /proc/<pid>/stat's 10 ms ticks, which
/// are a tenth of a short round's CPU.
pub fn cpu_seconds(pid: i32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"));
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).expect("a schedstat line"))
        .sum();
    nanos as f64 / 1e9
}
