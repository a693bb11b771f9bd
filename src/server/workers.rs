//! The threads that serve requests. Each worker is one OS thread running a single-threaded tokio
//! runtime. An accepted connection is handed to one worker and stays there for its whole life,
//! with its requests and the pooled upstream connections they use (`upstream` keeps one idle list per
//! worker): nothing on the request path wakes another thread. This is nginx's worker model
//! inside one process. Against tokio's work-stealing pool it cut CPU per request by about a
//! fifth on the 2-core bench machine, mostly futex and cross-core wake-ups (bench/README).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Per worker: dropping the sender stops it; the receiver resolves once it has exited.
    running: Mutex<Vec<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl Workers {
    /// Starts `count` workers (at least one). Each runs `on_start` first and `on_exit` last,
    /// after its runtime and every task on it are gone.
    pub fn start(
        count: usize,
        on_start: Arc<dyn Fn() + Send + Sync>,
        on_exit: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Workers> {
        let (mut handles, mut running) = (Vec::new(), Vec::new());
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped_rx) = oneshot::channel();
            handles.push(runtime.handle().clone());
            let (on_start, on_exit) = (Arc::clone(&on_start), Arc::clone(&on_exit));
            std::thread::Builder::new()
                .name(format!("hookgate-worker-{index}"))
                .spawn(move || {
                    // Its own idle list in every upstream pool.
                    crate::upstream::bind_worker(index);
                    // Its own Redis connection and batcher.
                    crate::cluster::redis::bind_lane(index);
                    // Its own task that hands out the spool writer's answers.
                    {
                        let _entered = runtime.enter();
                        crate::delivery::spool::bind_answer_lane();
                    }
                    on_start();
                    // Serves every task spawned onto this runtime until told to stop, or until
                    // the gateway is dropped.
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                    drop(runtime);
                    on_exit();
                    let _ = stopped_tx.send(());
                })?;
            running.push((stop_tx, stopped_rx));
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            running: Mutex::new(running),
        })
    }

    /// The workers' runtimes, in worker order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on the next worker, round robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(task);
    }

    /// Runs a task made by `make` on every worker.
    pub fn spawn_on_each<F>(&self, make: impl Fn() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for handle in &self.handles {
            handle.spawn(make());
        }
    }

    /// Stops every worker: tasks still running are dropped. Waits up to `timeout` for them.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let (stop, stopped): (Vec<_>, Vec<_>) = running.into_iter().unzip();
        drop(stop);
        let all = async {
            for exited in stopped {
                let _ = exited.await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}
