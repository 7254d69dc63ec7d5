//! Victims chosen ahead, on a thread of their own: scanning a subtree's
//! processes in /proc, reading their memory, opening and verifying pidfds
//! all take time and locks a loaded host can make long, so none of it
//! happens on the loop that delivers kills. The loop sends the lines that
//! want a victim once a second (and at once when a line is first
//! throttled); this thread answers with prepared victims, which the loop
//! keeps until a breach uses one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::act::kill::Prepared;
use crate::config::Pattern;
use crate::policy::budget::Line;
use crate::policy::victim::{self, Rank, Rules};
use crate::sys::procs::subtree_processes;

/// How the victim of a line is ranked.
#[derive(Clone, Debug)]
pub(super) enum Ranking {
    Largest,
    /// Throttled ns in the budget's window by tgid, episodes in progress
    /// counted.
    MostThrottled(HashMap<u32, u64>),
}

/// What the preparer needs to choose one line's victim.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub key: (usize, Line),
    /// The line's cgroup: the victim is chosen in its subtree.
    pub dir: PathBuf,
    pub path: String,
    /// The cause's directory, whose memory files stay open with the victim
    /// (cgroup v2).
    pub cause_dir: Option<PathBuf>,
    pub ranking: Ranking,
    pub protect: Vec<Pattern>,
    pub avoid: Vec<Pattern>,
    pub prefer: Vec<Pattern>,
    pub with_cmdline: bool,
}

/// A prepared victim for a line, or why there is none.
pub(super) struct Answer {
    pub key: (usize, Line),
    pub victim: Option<Prepared>,
}

/// The preparer thread's two ends, as the loop sees them.
pub(super) struct Preparer {
    jobs: SyncSender<Vec<Job>>,
    pub(super) answers: UnboundedReceiver<Vec<Answer>>,
}

impl Preparer {
    pub(super) fn start(self_pid: u32, page_size: u64) -> Self {
        // One batch in flight and one waiting: a slow scan makes the loop
        // skip a second, never queue up stale work.
        let (jobs, rx) = sync_channel::<Vec<Job>>(1);
        let (tx, answers) = unbounded_channel();
        let own_exe = std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name("victims".into())
            .spawn(move || run(&rx, &tx, self_pid, &own_exe, page_size));
        if let Err(e) = spawned {
            log::error!("cannot start the victim thread ({e}): victims are chosen at the breach");
        }
        Self { jobs, answers }
    }

    /// Hands a batch to the thread; false when it is still busy with the
    /// last one (or gone).
    pub(super) fn send(&self, batch: Vec<Job>) -> bool {
        match self.jobs.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run(
    rx: &Receiver<Vec<Job>>,
    tx: &UnboundedSender<Vec<Answer>>,
    self_pid: u32,
    own_exe: &str,
    page_size: u64,
) {
    while let Ok(batch) = rx.recv() {
        let answers = batch
            .into_iter()
            .map(|job| Answer {
                key: job.key,
                victim: choose(&job, self_pid, own_exe, page_size),
            })
            .collect();
        if tx.send(answers).is_err() {
            return;
        }
    }
}

/// Chooses and verifies one line's victim; also what the loop calls in
/// the rare breach that comes before any prepared victim.
pub(super) fn choose(job: &Job, self_pid: u32, own_exe: &str, page_size: u64) -> Option<Prepared> {
    let procs = subtree_processes(&job.dir, &job.path, page_size, job.with_cmdline);
    let rank = match &job.ranking {
        Ranking::Largest => Rank::Largest,
        Ranking::MostThrottled(t) => Rank::MostThrottled(t),
    };
    let rules = Rules {
        self_pid,
        own_exe,
        protect: &job.protect,
        avoid: &job.avoid,
        prefer: &job.prefer,
    };
    let choice = victim::choose(procs, rank, &rules);
    for s in &choice.spared {
        log::debug!("{}: spared {}[{}]: {}", job.path, s.comm, s.pid, s.reason);
    }
    let prepared = Prepared::new(choice.victim?).ok()?;
    Some(match &job.cause_dir {
        Some(dir) => prepared.with_cause(dir),
        None => prepared,
    })
}
