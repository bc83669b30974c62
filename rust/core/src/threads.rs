//! How many threads the kernels use: a `threads` argument, else `RYZQ_NUM_THREADS`, else
//! `RAYON_NUM_THREADS`, else every core. Results never depend on it.
//!
//! The kernels run in pools of ryzq's own, one per size and per process, never in rayon's
//! global pool: a fork (a `ProcessPoolExecutor`'s workers on Linux) copies a pool but not its
//! threads, and the child would wait on them forever. A child builds pools of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

fn env_threads() -> Result<Option<usize>> {
    match std::env::var("RYZQ_NUM_THREADS") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<usize>().map(Some).map_err(|_| {
            Error::InvalidArgument(format!("RYZQ_NUM_THREADS={v:?} is not a number of threads"))
        }),
        _ => Ok(None),
    }
}

/// The pools of a process, by size.
#[derive(Default)]
struct Pools {
    pid: u32,
    by_size: HashMap<usize, Arc<rayon::ThreadPool>>,
}

/// A pool of `n` threads, built once per size and process and kept for later calls.
fn pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let mut guard = POOLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pid = std::process::id();
    if guard.pid != pid {
        // A parent's pools, copied by a fork without their threads: never dropped, since
        // dropping one would signal threads that are not there.
        for (_, inherited) in guard.by_size.drain() {
            std::mem::forget(inherited);
        }
        guard.pid = pid;
    }
    let pools = &mut guard.by_size;
    if let Some(p) = pools.get(&n) {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("ryzq-{i}"))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start {n} threads: {e}")))?,
    );
    pools.insert(n, Arc::clone(&p));
    Ok(p)
}

/// The number of threads `threads` (or the environment) gives.
pub fn resolve(threads: Option<usize>) -> Result<Option<usize>> {
    let n = match threads {
        Some(n) => Some(n),
        None => env_threads()?,
    };
    if n == Some(0) {
        return Err(Error::InvalidArgument("threads must be at least 1".into()));
    }
    Ok(n)
}

/// The threads used where neither a `threads` argument nor `RYZQ_NUM_THREADS` says:
/// `RAYON_NUM_THREADS`, else every core.
#[must_use]
pub fn default_count() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs `f` on `threads` threads (see the module doc); returns its result and the count.
pub fn run<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<(R, usize)> {
    let n = resolve(threads)?.unwrap_or_else(default_count);
    let p = pool(n)?;
    Ok((p.install(f), n))
}
