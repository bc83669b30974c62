//! How many threads the kernels use: a `threads` argument, else `RYZQ_NUM_THREADS`, else
//! rayon's global pool (every core, or `RAYON_NUM_THREADS`). Results never depend on it.

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

/// A pool of `n` threads, built once per size and kept for later calls.
fn pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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

/// Runs `f` on `threads` threads (see the module doc); returns its result and the count.
pub fn run<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<(R, usize)> {
    match resolve(threads)? {
        Some(n) => {
            let p = pool(n)?;
            Ok((p.install(f), n))
        }
        None => Ok((f(), rayon::current_num_threads())),
    }
}
