//! lookout's worker pools: external worker processes speaking JSON lines over stdin/stdout
//! (docs/worker-protocol.md), a bounded queue, sessions pinned to workers, recycling and
//! crash replacement — and a lifecycle event on the bus for each step (REQUIREMENTS.md 1.x).

// `ExecError` carries the whole context of a failed request on purpose (REQUIREMENTS.md 6.1);
// it is built once per failure and moved to the caller, so its size costs nothing that
// boxing would save.
#![allow(clippy::result_large_err)]

mod config;
mod demo;
mod error;
mod metrics;
mod pool;
mod process;
mod protocol;
mod telemetry;
pub mod trace;

use std::collections::BTreeMap;

use lookout_core::Bus;
use parking_lot::RwLock;

pub use config::{HealthCriteria, MAX_POOL_SIZE, PoolConfig, TelemetryLimits};
pub use error::{Error, Result};
pub use metrics::PoolMetrics;
pub use pool::{
    CleanFailure, ErrorKind, ExecError, ExecRequest, Executed, MAX_WINDOW, Pool, PoolSnapshot,
    PoolStatus, SessionInfo, WindowStats, WorkerSnapshot, WorkerState, args_fields,
};
pub use process::memory_bytes;
pub use protocol::{PROTOCOL, read_worker_stdout};
pub use trace::Trace;

/// Every pool of a host, by name. Pools can be added and removed while the host runs.
#[derive(Debug, Default)]
pub struct Pools {
    pools: RwLock<BTreeMap<String, Pool>>,
    /// What a pool added later starts with; absent in `Pools::default()`, which stays empty.
    starter: Option<Starter>,
}

#[derive(Debug)]
struct Starter {
    bus: Bus,
    metrics: PoolMetrics,
    /// Pools added from outside the runtime (the config-file watcher's thread) start here.
    runtime: tokio::runtime::Handle,
}

impl Pools {
    /// Starts each configured pool (workers come up in the background). Call it inside a
    /// tokio runtime: pools added later start on the same one.
    pub fn start(
        configs: &[PoolConfig],
        bus: &Bus,
        registry: &prometheus::Registry,
    ) -> Result<Pools> {
        let metrics = PoolMetrics::new(registry).map_err(Error::Metrics)?;
        let pools = Pools {
            pools: RwLock::default(),
            starter: Some(Starter {
                bus: bus.clone(),
                metrics,
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        for config in configs {
            pools.add(config.clone())?;
        }
        Ok(pools)
    }

    /// Starts one more pool.
    pub fn add(&self, config: PoolConfig) -> Result<()> {
        let starter = self.starter.as_ref().ok_or_else(|| Error::CannotStart {
            name: config.name.clone(),
        })?;
        let mut pools = self.pools.write();
        if pools.contains_key(&config.name) {
            return Err(Error::DuplicateName { name: config.name });
        }
        let _runtime = starter.runtime.enter();
        let name = config.name.clone();
        let pool = Pool::start(config, starter.bus.clone(), starter.metrics.clone())?;
        pools.insert(name, pool);
        Ok(())
    }

    /// Takes a pool out at once (new requests get 404) and stops it gracefully in the
    /// background: queued requests are refused, running ones finish within its stop grace.
    pub fn remove(&self, name: &str, reason: &str) -> bool {
        let Some(pool) = self.pools.write().remove(name) else {
            return false;
        };
        let reason = reason.to_string();
        let Some(starter) = &self.starter else {
            // Only `start` adds pools, and it sets the starter.
            return true;
        };
        let (metrics, name) = (starter.metrics.clone(), name.to_string());
        drop(starter.runtime.spawn(async move {
            pool.stop(&reason).await;
            metrics.forget(&name);
        }));
        true
    }

    pub fn get(&self, name: &str) -> Option<Pool> {
        self.pools.read().get(name).cloned()
    }

    /// The pools, by name.
    pub fn all(&self) -> Vec<Pool> {
        self.pools.read().values().cloned().collect()
    }

    /// Stops every pool gracefully, all at once.
    pub async fn stop(&self, reason: &str) {
        let all = self.all();
        let stops: Vec<_> = all.iter().map(|p| p.stop(reason)).collect();
        for stop in stops {
            stop.await;
        }
    }
}
