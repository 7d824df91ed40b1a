//! lookout's worker pools: external worker processes speaking JSON lines over stdin/stdout
//! (docs/worker-protocol.md), a bounded queue, sessions pinned to workers, recycling and
//! crash replacement — and a lifecycle event on the bus for each step (REQUIREMENTS.md 1.x).

// `ExecError` carries the whole context of a failed request on purpose (REQUIREMENTS.md 6.1);
// it is built once per failure and moved to the caller, so its size costs nothing that
// boxing would save.
#![allow(clippy::result_large_err)]

mod config;
mod demo;
mod metrics;
mod pool;
mod process;
mod protocol;

use std::collections::BTreeMap;

use lookout_core::Bus;

pub use config::{HealthCriteria, MAX_POOL_SIZE, PoolConfig};
pub use metrics::PoolMetrics;
pub use pool::{
    CleanFailure, ErrorKind, ExecError, ExecRequest, Executed, MAX_WINDOW, Pool, PoolSnapshot,
    SessionInfo, WindowStats, WorkerSnapshot, WorkerState, args_fields,
};
pub use protocol::PROTOCOL;

/// Every pool of a host, by name.
#[derive(Clone, Debug, Default)]
pub struct Pools {
    pools: BTreeMap<String, Pool>,
}

impl Pools {
    /// Starts each configured pool (workers come up in the background).
    pub fn start(
        configs: &[PoolConfig],
        bus: &Bus,
        registry: &prometheus::Registry,
    ) -> Result<Pools, String> {
        let metrics = PoolMetrics::new(registry).map_err(|e| format!("pool metrics: {e}"))?;
        let mut pools = BTreeMap::new();
        for config in configs {
            if pools.contains_key(&config.name) {
                return Err(format!("pools.{}: two pools have this name", config.name));
            }
            let pool = Pool::start(config.clone(), bus.clone(), metrics.clone())?;
            pools.insert(config.name.clone(), pool);
        }
        Ok(Pools { pools })
    }

    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// Stops every pool gracefully, all at once.
    pub async fn stop(&self, reason: &str) {
        let stops: Vec<_> = self.pools.values().map(|p| p.stop(reason)).collect();
        for stop in stops {
            stop.await;
        }
    }
}
