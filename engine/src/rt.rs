//! The runtime seam: the one module of the engine that names glommio, apart from the file IO
//! behind [`crate::log::storage`].
//!
//! Everything the broker needs from its thread-per-core runtime is here: starting a pinned
//! executor per shard, spawning and tracking tasks, timers, TCP listeners and streams, the
//! channel mesh between shards, a semaphore, and the stop signal that wakes every shard from
//! another thread. The rest of the engine uses these names only, so moving to another
//! io_uring runtime (compio, io-uring directly) is a change of this module (and of
//! `DmaStorage`).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::notify::Notify;

/// Runs the server side of TLS handshakes over a [`TcpStream`] (futures-rustls, which works
/// on any `AsyncRead + AsyncWrite`); cloning it shares the configuration.
pub(crate) use futures_rustls::TlsAcceptor;
/// A spawned task: awaiting it yields its output; dropping it cancels it (the runtime drops
/// its future the next time it would run); [`Task::detach`] lets it run on its own.
pub(crate) use glommio::Task;
/// A TCP listener of the current executor.
pub(crate) use glommio::net::TcpListener;
/// A TCP stream of the current executor (`AsyncRead + AsyncWrite`).
pub(crate) use glommio::net::TcpStream;
/// The TCP stream under TLS: buffered, because rustls reads at most 4 KiB per `read_tls`
/// and an unbuffered glommio stream makes each of those a `recv(2)`; with the buffer one
/// syscall takes up to [`TLS_RX_BUFFER_BYTES`] and rustls's reads are copies from it.
pub(crate) type TlsTcpStream = glommio::net::TcpStream<glommio::net::Preallocated>;
/// Receive buffer under each TLS stream: one full TLS record (16 KiB of plaintext plus its
/// header and tag) and the next one's start. Allocated per connection while it lives, so it
/// is bounded by the connection limits like the rest of a connection's memory.
pub(crate) const TLS_RX_BUFFER_BYTES: usize = 32 << 10;
/// A server-side TLS stream over a [`TlsTcpStream`], after its handshake.
pub(crate) type TlsStream = futures_rustls::server::TlsStream<TlsTcpStream>;

/// `stream`, buffered to sit under TLS (see [`TlsTcpStream`]).
pub(crate) fn buffered_for_tls(stream: TcpStream) -> TlsTcpStream {
    stream.buffered_with(glommio::net::Preallocated::new(TLS_RX_BUFFER_BYTES))
}
/// A counting semaphore of the current executor; `acquire_static_permit` gives an owned
/// permit.
pub(crate) use glommio::sync::Semaphore;

/// The receiving side of the mesh: one bounded channel from every other shard.
pub(crate) use glommio::channels::channel_mesh::Receivers as MeshReceivers;
/// The sending side of the mesh: one bounded channel to every other shard.
pub(crate) use glommio::channels::channel_mesh::Senders as MeshSenders;
/// The receiving side of a bounded channel within one executor.
pub(crate) use glommio::channels::local_channel::LocalReceiver;
/// The sending side of a bounded channel within one executor.
pub(crate) use glommio::channels::local_channel::LocalSender;

/// Time the current thread's executor spent since it started: running tasks, and in all
/// (tasks, polling io_uring and timers, the scheduler; not spinning or parked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExecutorTime {
    pub tasks: Duration,
    pub total: Duration,
    pub tasks_run: u64,
}

thread_local! {
    /// What [`executor_time`] added up so far on this thread.
    static EXECUTOR_TIME: Cell<ExecutorTime> = const {
        Cell::new(ExecutorTime {
            tasks: Duration::ZERO,
            total: Duration::ZERO,
            tasks_run: 0,
        })
    };
}

/// The current executor's [`ExecutorTime`]. glommio measures it itself (two clock reads per
/// task queue run, not per task) and hands out what accrued since the previous read, so the
/// sum is kept here; nothing else in the engine reads glommio's executor stats.
pub(crate) fn executor_time() -> ExecutorTime {
    let accrued = glommio::executor().executor_stats();
    EXECUTOR_TIME.with(|time| {
        let mut sum = time.get();
        sum.tasks += accrued.executor_runtime();
        sum.total += accrued.total_runtime();
        sum.tasks_run += accrued.tasks_executed();
        time.set(sum);
        sum
    })
}

/// A full mesh of `count` shards, each joining it from its own executor.
pub(crate) type Mesh<T> =
    glommio::channels::channel_mesh::MeshBuilder<T, glommio::channels::channel_mesh::Full>;

/// A mesh of `shards` peers whose channels hold `capacity` messages each.
pub(crate) fn mesh<T: Send + 'static>(shards: usize, capacity: usize) -> Mesh<T> {
    Mesh::full(shards, capacity)
}

/// Joins `mesh` from the current executor; resolves once every peer joined.
pub(crate) async fn join_mesh<T: Send + 'static>(
    mesh: Mesh<T>,
) -> std::io::Result<(MeshSenders<T>, MeshReceivers<T>)> {
    Ok(mesh.join().await?)
}

/// A bounded channel within one executor.
pub(crate) fn local_channel<T>(capacity: usize) -> (LocalSender<T>, LocalReceiver<T>) {
    glommio::channels::local_channel::new_bounded(capacity)
}

/// Runs `future` to completion on a new executor on the calling thread (offline tools that
/// are not running inside one); an error says why the executor did not start.
pub(crate) fn run_here<F: Future>(future: F) -> Result<F::Output, String> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|e| e.to_string())?;
    Ok(executor.run(future))
}

/// Spawns `future` on the current executor.
pub(crate) fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

/// Resolves after `duration`.
pub(crate) async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Lets the shard's other tasks run if this one has held the executor past its time slice:
/// for long loops that may never wait (a scan served from a tail cache).
pub(crate) async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// `future`'s output, or `None` if `duration` passes first.
pub(crate) async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(duration).await;
        None
    })
    .await
}

/// How a shard's executor is started.
pub(crate) struct ExecutorSpec<'a> {
    /// The thread's name.
    pub name: &'a str,
    /// The CPU it is pinned to.
    pub cpu: usize,
    /// Bytes of IO memory registered with the kernel for the executor.
    pub io_memory_bytes: usize,
    /// How long the executor spins before it parks.
    pub spin_before_park: Duration,
}

/// A started executor thread; [`Executor::join`] waits for its output.
pub(crate) struct Executor<T: Send + 'static>(glommio::ExecutorJoinHandle<T>);

impl<T: Send + 'static> Executor<T> {
    /// Waits for the executor's future to finish; an error names how the thread failed.
    pub fn join(self) -> Result<T, String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// Starts a pinned executor thread running the future `make()` builds on it.
pub(crate) fn start_executor<G, F, T>(
    spec: &ExecutorSpec<'_>,
    make: G,
) -> std::io::Result<Executor<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(spec.cpu))
        .name(spec.name)
        .io_memory(spec.io_memory_bytes)
        .spin_before_park(spec.spin_before_park)
        .spawn(make)?;
    Ok(Executor(handle))
}

/// The tasks of one shard: counted while they live (to completion or cancellation), so the
/// shard can wait at close until the last one lets go instead of polling or sleeping.
#[derive(Default)]
pub(crate) struct Tasks {
    count: Rc<TaskCount>,
}

#[derive(Default)]
struct TaskCount {
    live: Cell<usize>,
    /// Notified when `live` drops to zero.
    idle: Notify,
}

/// Held by a tracked task's future; counts the task out when the future is dropped, which the
/// runtime does when the task ends or, once cancelled, the next time it would run.
struct Tracked(Rc<TaskCount>);

impl Drop for Tracked {
    fn drop(&mut self) {
        let live = self.0.live.get() - 1;
        self.0.live.set(live);
        if live == 0 {
            self.0.idle.notify();
        }
    }
}

impl Tasks {
    /// Spawns `future` as a tracked task of the current executor.
    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T> {
        self.count.live.set(self.count.live.get() + 1);
        let tracked = Tracked(self.count.clone());
        spawn(async move {
            let _tracked = tracked;
            future.await
        })
    }

    /// How many tracked tasks live.
    pub fn live(&self) -> usize {
        self.count.live.get()
    }

    /// Resolves once no tracked task lives (at once if none does).
    pub async fn idle(&self) {
        loop {
            let seen = self.count.idle.generation();
            if self.count.live.get() == 0 {
                return;
            }
            self.count.idle.wait(seen).await;
        }
    }
}

/// A stop signal raised from any thread and awaited by executors: raising it wakes every
/// waiter through the runtime's cross-thread wake-up (an eventfd the parked executor sleeps
/// on), so no executor polls a flag.
#[derive(Default)]
pub(crate) struct StopSignal {
    raised: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl StopSignal {
    /// A signal not raised yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Raises the signal and wakes every waiter; later waits resolve at once.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.lock());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Whether the signal was raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the signal is raised.
    pub fn wait(&self) -> StopWait<'_> {
        StopWait { signal: self }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A waiter list is valid whatever a panicking holder left in it.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The future of [`StopSignal::wait`].
pub(crate) struct StopWait<'a> {
    signal: &'a StopSignal,
}

impl Future for StopWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_raised() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.lock();
        // Checked again under the lock: `raise` takes the list after setting the flag.
        if self.signal.is_raised() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_executor<T: Send + 'static>(
        future: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> T {
        let spec = ExecutorSpec {
            name: "rt-test",
            cpu: 0,
            io_memory_bytes: 64 << 10,
            spin_before_park: Duration::ZERO,
        };
        start_executor(&spec, future).unwrap().join().unwrap()
    }

    #[test]
    fn a_stop_raised_from_another_thread_wakes_a_parked_executor() {
        let stop = StopSignal::new();
        let waiting = stop.clone();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let executor = std::thread::spawn(move || {
            on_executor(move || {
                Box::pin(async move {
                    parked_tx.send(()).unwrap();
                    waiting.wait().await;
                    true
                })
            })
        });
        parked_rx.recv().unwrap();
        stop.raise();
        assert!(executor.join().unwrap());
        assert!(stop.is_raised());
    }

    #[test]
    fn tasks_go_idle_when_the_last_one_ends_or_is_cancelled() {
        let live = on_executor(|| {
            Box::pin(async {
                let tasks = Tasks::default();
                tasks.idle().await;
                let (tx, rx) = local_channel::<()>(1);
                let finishing = tasks.spawn(async move {
                    let _ = rx.recv().await;
                });
                finishing.detach();
                let waiting = tasks.spawn(std::future::pending::<()>());
                assert_eq!(tasks.live(), 2);
                drop(waiting);
                tx.try_send(()).unwrap();
                tasks.idle().await;
                tasks.live()
            })
        });
        assert_eq!(live, 0);
    }
}
