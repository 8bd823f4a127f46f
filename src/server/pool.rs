//! The worker thread pool. It knows nothing of HTTP: it starts threads, tracks what each slot
//! is doing, parks surplus threads and wakes them, and lets threads above the minimum exit
//! after an idle spell. The server decides when to park or wake (see `server/monitor.rs`).
//!
//! `active` counts the threads that are not parked. A thread may park only while more than
//! `stuck + 1` are active, so at least one thread that is not stuck in a slow request is
//! always polling. `threads` counts the workers that will go on running: a parked thread
//! that idles out leaves both counts at once, when `try_park` lets it go (not when its OS
//! thread ends), so the next decision already sees the pool without it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
    /// Set when this worker was let go by `try_park` (already taken off `threads`).
    static RETIRED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is one of the pool's workers.
pub fn on_worker_thread() -> bool {
    IS_WORKER.with(Cell::get)
}

/// What a worker slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// No thread.
    Exited,
    /// Looking for work (events, the ready queue).
    Polling,
    /// Running a request.
    Handling,
    /// Asleep in the park lot.
    Parked,
}

impl SlotState {
    fn from_u8(v: u8) -> SlotState {
        match v {
            1 => SlotState::Polling,
            2 => SlotState::Handling,
            3 => SlotState::Parked,
            _ => SlotState::Exited,
        }
    }
}

struct Slot {
    state: AtomicU8,
    /// Incremented each time the thread starts a request: the monitor sees progress.
    seq: AtomicU64,
}

impl Slot {
    fn state(&self) -> SlotState {
        SlotState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set(&self, state: SlotState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct ParkLot {
    parked: usize,
    wakeups: usize,
}

/// What `try_park` came back with.
#[derive(Debug, PartialEq, Eq)]
pub enum Parked {
    /// Parking was not allowed: keep polling.
    No,
    /// Parked, then woken.
    Resumed,
    /// Parked until the idle limit passed: a surplus thread exits.
    Exit,
}

pub struct Pool {
    slots: Box<[Slot]>,
    min: usize,
    threads: AtomicUsize,
    active: AtomicUsize,
    stuck: AtomicUsize,
    lot: Mutex<ParkLot>,
    lot_cv: Condvar,
    /// Threads alive (workers and helpers such as the monitor).
    alive: Mutex<usize>,
    alive_cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub fn new(min: usize, max: usize) -> Pool {
        Pool {
            slots: (0..max.max(min))
                .map(|_| Slot {
                    state: AtomicU8::new(SlotState::Exited as u8),
                    seq: AtomicU64::new(0),
                })
                .collect(),
            min,
            threads: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            stuck: AtomicUsize::new(0),
            lot: Mutex::new(ParkLot::default()),
            lot_cv: Condvar::new(),
            alive: Mutex::new(0),
            alive_cv: Condvar::new(),
        }
    }

    pub fn min(&self) -> usize {
        self.min
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Starts a worker in a free slot running `body(slot)`; `Ok(false)` when all are taken.
    pub fn spawn_worker(
        self: &Arc<Self>,
        body: impl FnOnce(usize) + Send + 'static,
    ) -> std::io::Result<bool> {
        let free = self.slots.iter().position(|s| {
            s.state
                .compare_exchange(
                    SlotState::Exited as u8,
                    SlotState::Polling as u8,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        });
        let Some(index) = free else {
            return Ok(false);
        };
        self.threads.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        *lock(&self.alive) += 1;
        let pool = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("stogie-worker-{index}"))
            .spawn(move || {
                IS_WORKER.with(|w| w.set(true));
                body(index);
                pool.slots[index]
                    .state
                    .store(SlotState::Exited as u8, Ordering::Release);
                if !RETIRED.with(Cell::get) {
                    pool.threads.fetch_sub(1, Ordering::AcqRel);
                }
                pool.thread_exited();
            });
        if let Err(e) = spawned {
            self.slots[index]
                .state
                .store(SlotState::Exited as u8, Ordering::Release);
            self.threads.fetch_sub(1, Ordering::AcqRel);
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.thread_exited();
            return Err(e);
        }
        Ok(true)
    }

    /// Starts a helper thread (not a worker) that `wait_for_threads` also waits for.
    pub fn spawn_helper(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        *lock(&self.alive) += 1;
        let pool = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                body();
                pool.thread_exited();
            });
        spawned.map(drop).inspect_err(|_| self.thread_exited())
    }

    fn thread_exited(&self) {
        let mut alive = lock(&self.alive);
        *alive -= 1;
        self.alive_cv.notify_all();
    }

    pub fn set_state(&self, slot: usize, state: SlotState) {
        self.slots[slot].set(state);
    }

    /// The worker in `slot` starts a request.
    pub fn begin_request(&self, slot: usize) {
        let s = &self.slots[slot];
        s.seq.fetch_add(1, Ordering::Relaxed);
        s.set(SlotState::Handling);
    }

    /// Worker threads running.
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    /// (threads, idle threads).
    pub fn thread_counts(&self) -> (usize, usize) {
        let total = self.threads.load(Ordering::Relaxed);
        let busy = self
            .slots
            .iter()
            .filter(|s| s.state() == SlotState::Handling)
            .count();
        (total, total.saturating_sub(busy))
    }

    /// Compares each slot's request count with `last_seq` (updated): returns how many are
    /// handling a request and calls `on_stuck` for those that made no progress since.
    pub fn observe(&self, last_seq: &mut [u64], mut on_stuck: impl FnMut(usize)) -> usize {
        let mut stuck = 0;
        let mut handling = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let seq = slot.seq.load(Ordering::Relaxed);
            if slot.state() == SlotState::Handling {
                handling += 1;
                if seq == last_seq[i] {
                    stuck += 1;
                    on_stuck(i);
                }
            }
            last_seq[i] = seq;
        }
        self.stuck.store(stuck, Ordering::Relaxed);
        handling
    }

    /// Whether every thread that is not parked is stuck.
    pub fn all_active_stuck(&self) -> bool {
        self.active.load(Ordering::Relaxed) <= self.stuck.load(Ordering::Relaxed)
    }

    /// Parks the calling worker if enough others are active; `stopping` ends parking (the
    /// worker helps drain), and a surplus thread idle for `idle_limit` is told to exit.
    pub fn try_park(
        &self,
        slot: usize,
        idle_limit: Duration,
        stopping: impl Fn() -> bool,
    ) -> Parked {
        let stuck = self.stuck.load(Ordering::Relaxed);
        let parked = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |a| {
                (a > stuck + 1).then(|| a - 1)
            })
            .is_ok();
        if !parked {
            return Parked::No;
        }
        self.slots[slot].set(SlotState::Parked);
        let mut lot = lock(&self.lot);
        lot.parked += 1;
        let since = Instant::now();
        loop {
            if lot.wakeups > 0 {
                lot.wakeups -= 1;
                lot.parked -= 1;
                return Parked::Resumed;
            }
            if stopping() {
                lot.parked -= 1;
                self.active.fetch_add(1, Ordering::AcqRel);
                return Parked::Resumed;
            }
            if since.elapsed() >= idle_limit && self.retire() {
                // Neither parked nor active any more: `active` already went down at parking.
                lot.parked -= 1;
                return Parked::Exit;
            }
            lot = self
                .lot_cv
                .wait_timeout(lot, idle_limit)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Takes the calling worker off `threads` if that leaves at least `min`: decided here,
    /// at once, so that two threads idling out together cannot both see a surplus of one and
    /// take the pool below its minimum.
    fn retire(&self) -> bool {
        let retired = self
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                (t > self.min).then(|| t - 1)
            })
            .is_ok();
        if retired {
            RETIRED.with(|r| r.set(true));
        }
        retired
    }

    /// Wakes one parked worker; false when none is parked.
    pub fn unpark_one(&self) -> bool {
        let mut lot = lock(&self.lot);
        if lot.parked > lot.wakeups {
            lot.wakeups += 1;
            self.active.fetch_add(1, Ordering::AcqRel);
            self.lot_cv.notify_one();
            return true;
        }
        false
    }

    /// Wakes every parked worker to look at `stopping` again.
    pub fn wake_all(&self) {
        let _lot = lock(&self.lot);
        self.lot_cv.notify_all();
    }

    /// Waits until only the calling thread (if it is a worker) is left.
    pub fn wait_for_threads(&self, limit: Duration) -> bool {
        let own = usize::from(on_worker_thread());
        self.wait_until(limit, |alive| alive <= own)
    }

    /// Waits on the thread-count condition variable until `done(alive threads)` or `limit`.
    pub fn wait_until(&self, limit: Duration, done: impl Fn(usize) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut alive = lock(&self.alive);
        while !done(*alive) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            alive = self
                .alive_cv
                .wait_timeout(alive, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// Wakes `wait_until` callers whose condition depends on something else that changed.
    pub fn notify_waiters(&self) {
        let _alive = lock(&self.alive);
        self.alive_cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const LONG: Duration = Duration::from_secs(5);

    #[test]
    fn workers_fill_free_slots_and_exit() {
        let pool = Arc::new(Pool::new(1, 2));
        let (started, slots) = std::sync::mpsc::channel();
        let (release, _) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(()));
        let held = lock(&gate);
        for _ in 0..2 {
            let (started, gate) = (started.clone(), Arc::clone(&gate));
            let spawned = pool.spawn_worker(move |slot| {
                started.send(slot).unwrap();
                drop(lock(&gate));
            });
            assert!(spawned.unwrap());
        }
        assert!(!pool.spawn_worker(|_| {}).unwrap(), "both slots are taken");
        let mut seen = [slots.recv().unwrap(), slots.recv().unwrap()];
        seen.sort();
        assert_eq!(seen, [0, 1]);
        assert_eq!(pool.thread_counts(), (2, 2));
        drop((held, release));
        assert!(pool.wait_for_threads(LONG));
        assert_eq!(pool.thread_counts(), (0, 0));
    }

    #[test]
    fn the_last_unstuck_thread_never_parks() {
        let pool = Pool::new(2, 2);
        pool.active.store(1, Ordering::Relaxed);
        assert_eq!(pool.try_park(0, LONG, || false), Parked::No);
        // Two active, none stuck: one may park; a wake-up brings it back.
        pool.active.store(2, Ordering::Relaxed);
        let pool = Arc::new(pool);
        let parker = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || pool.try_park(0, LONG, || false))
        };
        while lock(&pool.lot).parked == 0 {
            std::thread::yield_now();
        }
        assert_eq!(pool.active.load(Ordering::Relaxed), 1);
        assert!(pool.unpark_one());
        assert_eq!(parker.join().unwrap(), Parked::Resumed);
        assert_eq!(pool.active.load(Ordering::Relaxed), 2);
        assert!(!pool.unpark_one(), "nobody is parked any more");
    }

    #[test]
    fn surplus_threads_exit_after_idling_and_stopping_resumes() {
        let pool = Pool::new(1, 2);
        pool.threads.store(2, Ordering::Relaxed);
        pool.active.store(2, Ordering::Relaxed);
        let short = Duration::from_millis(20);
        assert_eq!(pool.try_park(1, short, || false), Parked::Exit);
        // The leaving thread is neither active nor counted any more.
        assert_eq!(pool.active.load(Ordering::Relaxed), 1);
        assert_eq!(pool.threads(), 1);
        assert_eq!(
            pool.try_park(0, short, || false),
            Parked::No,
            "the one left polls"
        );
        pool.active.store(2, Ordering::Relaxed);
        let stop = AtomicBool::new(true);
        assert_eq!(
            pool.try_park(1, LONG, || stop.load(Ordering::Relaxed)),
            Parked::Resumed
        );
    }

    #[test]
    fn threads_idling_out_together_leave_the_minimum_polling() {
        // Grown to three over a minimum of one; two park and idle out at the same moment.
        let pool = Arc::new(Pool::new(1, 3));
        pool.threads.store(3, Ordering::Relaxed);
        pool.active.store(3, Ordering::Relaxed);
        let short = Duration::from_millis(20);
        let parkers: Vec<_> = (0..2)
            .map(|slot| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || pool.try_park(slot, short, || false))
            })
            .collect();
        let outcomes: Vec<Parked> = parkers.into_iter().map(|p| p.join().unwrap()).collect();
        assert_eq!(outcomes, [Parked::Exit, Parked::Exit]);
        assert_eq!(pool.threads(), 1);
        assert_eq!(pool.active.load(Ordering::Relaxed), 1);
        assert_eq!(
            pool.try_park(2, short, || false),
            Parked::No,
            "the last thread keeps polling"
        );
        // With a minimum of two, only one of two idle threads may go.
        let pool = Arc::new(Pool::new(2, 3));
        pool.threads.store(3, Ordering::Relaxed);
        pool.active.store(3, Ordering::Relaxed);
        let parkers: Vec<_> = (0..2)
            .map(|slot| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || pool.try_park(slot, short, || false))
            })
            .collect();
        while lock(&pool.lot).parked < 2 && pool.threads() == 3 {
            std::thread::yield_now();
        }
        std::thread::sleep(short * 5);
        assert_eq!(pool.threads(), 2, "one left, the other stays parked");
        assert!(pool.unpark_one());
        let mut outcomes: Vec<String> = parkers
            .into_iter()
            .map(|p| format!("{:?}", p.join().unwrap()))
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, ["Exit", "Resumed"]);
        assert_eq!(pool.active.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn observe_counts_stuck_slots() {
        let pool = Pool::new(2, 2);
        let mut last = vec![0; 2];
        pool.begin_request(0);
        pool.begin_request(1);
        let mut stuck = Vec::new();
        assert_eq!(pool.observe(&mut last, |i| stuck.push(i)), 2);
        assert!(stuck.is_empty(), "both made progress since the last look");
        pool.begin_request(1);
        assert_eq!(pool.observe(&mut last, |i| stuck.push(i)), 2);
        assert_eq!(stuck, vec![0]);
        pool.active.store(1, Ordering::Relaxed);
        assert!(pool.all_active_stuck());
    }
}
