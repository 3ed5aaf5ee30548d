//! A container's cgroup counters as containerd's cgroups v1 `Metrics`
//! message, the payload `ctr task metrics` and the CRI plugin decode (type
//! URL `io.containerd.cgroups.v1.Metrics`).

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl,
    MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

/// The type URL containerd registers the v1 metrics message under.
const METRICS_V1: &str = "io.containerd.cgroups.v1.Metrics";

fn entry(e: &berth_cgroups::MemoryEntry) -> MemoryEntry {
    MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
        ..Default::default()
    }
}

fn blkio(entries: &[berth_cgroups::BlkioEntry]) -> Vec<BlkIOEntry> {
    entries
        .iter()
        .map(|e| BlkIOEntry {
            op: e.op.clone(),
            major: e.major,
            minor: e.minor,
            value: e.value,
            ..Default::default()
        })
        .collect()
}

/// `stats` (with `oom_kills`) as the v1 `Metrics` message.
pub fn v1(stats: &berth_cgroups::Stats, oom_kills: u64) -> Metrics {
    let raw = |k: &str| stats.memory.raw.get(k).copied().unwrap_or(0);
    let mut hugetlb: Vec<HugetlbStat> = stats
        .hugetlb
        .iter()
        .map(|(size, h)| HugetlbStat {
            usage: h.usage,
            max: h.max,
            failcnt: h.failcnt,
            pagesize: size.clone(),
            ..Default::default()
        })
        .collect();
    hugetlb.sort_by(|a, b| a.pagesize.cmp(&b.pagesize));
    Metrics {
        hugetlb,
        pids: Some(PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: stats.cpu.usage.total,
                kernel: stats.cpu.usage.kernel,
                user: stats.cpu.usage.user,
                per_cpu: stats.cpu.usage.percpu.clone(),
                ..Default::default()
            })
            .into(),
            throttling: Some(Throttle {
                periods: stats.cpu.throttling.periods,
                throttled_periods: stats.cpu.throttling.throttled_periods,
                throttled_time: stats.cpu.throttling.throttled_time,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            cache: stats.memory.cache,
            rss: raw("rss"),
            rss_huge: raw("rss_huge"),
            mapped_file: raw("mapped_file"),
            dirty: raw("dirty"),
            writeback: raw("writeback"),
            pg_pg_in: raw("pgpgin"),
            pg_pg_out: raw("pgpgout"),
            pg_fault: raw("pgfault"),
            pg_maj_fault: raw("pgmajfault"),
            inactive_anon: raw("inactive_anon"),
            active_anon: raw("active_anon"),
            inactive_file: raw("inactive_file"),
            active_file: raw("active_file"),
            unevictable: raw("unevictable"),
            hierarchical_memory_limit: raw("hierarchical_memory_limit"),
            hierarchical_swap_limit: raw("hierarchical_memsw_limit"),
            total_cache: raw("total_cache"),
            total_rss: raw("total_rss"),
            total_rss_huge: raw("total_rss_huge"),
            total_mapped_file: raw("total_mapped_file"),
            total_dirty: raw("total_dirty"),
            total_writeback: raw("total_writeback"),
            total_pg_pg_in: raw("total_pgpgin"),
            total_pg_pg_out: raw("total_pgpgout"),
            total_pg_fault: raw("total_pgfault"),
            total_pg_maj_fault: raw("total_pgmajfault"),
            total_inactive_anon: raw("total_inactive_anon"),
            total_active_anon: raw("total_active_anon"),
            total_inactive_file: raw("total_inactive_file"),
            total_active_file: raw("total_active_file"),
            total_unevictable: raw("total_unevictable"),
            usage: Some(entry(&stats.memory.usage)).into(),
            swap: Some(entry(&stats.memory.swap)).into(),
            kernel: Some(entry(&stats.memory.kernel)).into(),
            kernel_tcp: Some(entry(&stats.memory.kernel_tcp)).into(),
            ..Default::default()
        })
        .into(),
        blkio: Some(BlkIOStat {
            io_service_bytes_recursive: blkio(&stats.blkio.io_service_bytes_recursive),
            io_serviced_recursive: blkio(&stats.blkio.io_serviced_recursive),
            ..Default::default()
        })
        .into(),
        memory_oom_control: Some(MemoryOomControl {
            oom_kill: oom_kills,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// `metrics` packed as the `Any` a stats response carries.
pub fn to_any(metrics: &Metrics) -> containerd_shim_protos::protobuf::Result<Any> {
    Ok(Any {
        type_url: METRICS_V1.to_string(),
        value: metrics.write_to_bytes()?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_land_in_the_fields_ctr_prints() {
        let mut s = berth_cgroups::Stats::default();
        s.memory.usage.usage = 4096;
        s.memory.usage.limit = 1 << 20;
        s.memory.raw.insert("total_rss".into(), 77);
        s.pids.current = 3;
        s.cpu.usage.total = 123;
        let m = v1(&s, 2);
        let any = to_any(&m).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let back = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage.usage, 4096);
        assert_eq!(back.memory.usage.limit, 1 << 20);
        assert_eq!(back.memory.total_rss, 77);
        assert_eq!(back.pids.current, 3);
        assert_eq!(back.cpu.usage.total, 123);
        assert_eq!(back.memory_oom_control.oom_kill, 2);
    }
}
