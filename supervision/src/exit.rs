//! Exit reasons, restart bookkeeping and the one way children are stopped.

use std::collections::VecDeque;
use std::time::Instant;

use ractor::{ActorCell, ActorStatus, SupervisionEvent};

use crate::spec::{Intensity, Restart, Shutdown};

/// Reason given to a child that its supervisor stops on purpose.
pub const SHUTDOWN_REASON: &str = "shutdown";

/// How a child ended, as far as restart decisions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped with no reason, `normal`, or `shutdown[...]`.
    Normal,
    /// Panicked, returned an error, was killed, or stopped with another reason.
    Abnormal(String),
}

impl Exit {
    /// Classifies a stop reason the way OTP classifies exit reasons.
    pub fn from_reason(reason: Option<&str>) -> Exit {
        match reason {
            None => Exit::Normal,
            Some(r) if r == "normal" || r.starts_with(SHUTDOWN_REASON) => Exit::Normal,
            Some(r) => Exit::Abnormal(r.to_string()),
        }
    }

    /// Whether a child with restart type `restart` is started again after
    /// this exit.
    pub fn restarts(&self, restart: Restart) -> bool {
        match restart {
            Restart::Permanent => true,
            Restart::Transient => matches!(self, Exit::Abnormal(_)),
            Restart::Temporary => false,
        }
    }
}

/// Pulls the exited actor and its exit out of a supervision event; `None`
/// for events that are not exits.
pub(crate) fn exit_of(evt: &SupervisionEvent) -> Option<(ActorCell, Exit)> {
    match evt {
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell.clone(), Exit::from_reason(reason.as_deref())))
        }
        SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.clone(), Exit::Abnormal(err.to_string())))
        }
        _ => None,
    }
}

/// Sliding window of restart times, to enforce [`Intensity`].
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart now; false when that exceeds the intensity.
    pub(crate) fn allow(&mut self, intensity: &Intensity) -> bool {
        let now = Instant::now();
        while let Some(&t) = self.times.front() {
            if now.duration_since(t) > intensity.period {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() <= intensity.max_restarts as usize
    }

    /// Restarts inside the current window (for backoff).
    pub(crate) fn recent(&self) -> usize {
        self.times.len().saturating_sub(1)
    }
}

/// Stops `cell` as `shutdown` says and returns once it has exited (or, for
/// a child that ignores both stop and kill, after the kill timed out, which
/// is logged).
pub async fn shutdown_child(cell: &ActorCell, shutdown: Shutdown) {
    if cell.get_status() == ActorStatus::Stopped {
        return;
    }
    match shutdown {
        Shutdown::BrutalKill => kill(cell).await,
        // Stop, then wait: a child already stopping (its stop channel is
        // closed while it runs `post_stop`) is waited for, not killed at
        // once, so that its clean-up finishes.
        Shutdown::Infinity => {
            cell.stop(Some(SHUTDOWN_REASON.to_string()));
            let _ = cell.wait(None).await;
        }
        Shutdown::Timeout(t) => {
            cell.stop(Some(SHUTDOWN_REASON.to_string()));
            if cell.wait(Some(t)).await.is_err() && cell.get_status() != ActorStatus::Stopped {
                tracing::warn!(actor = %cell.get_id(), timeout = ?t, "child ignored shutdown; killing it");
                kill(cell).await;
            }
        }
    }
}

async fn kill(cell: &ActorCell) {
    // A killed actor exits at its next await point; one that never yields
    // cannot be stopped by anything, so don't wait forever for it.
    if cell
        .kill_and_wait(Some(std::time::Duration::from_secs(5)))
        .await
        .is_err()
        && cell.get_status() != ActorStatus::Stopped
    {
        tracing::error!(actor = %cell.get_id(), "child did not exit 5 s after kill");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exit_reasons_follow_otp() {
        assert_eq!(Exit::from_reason(None), Exit::Normal);
        assert_eq!(Exit::from_reason(Some("normal")), Exit::Normal);
        assert_eq!(Exit::from_reason(Some("shutdown")), Exit::Normal);
        assert_eq!(Exit::from_reason(Some("shutdown: reload")), Exit::Normal);
        assert!(matches!(Exit::from_reason(Some("boom")), Exit::Abnormal(_)));
        assert!(Exit::Normal.restarts(Restart::Permanent));
        assert!(!Exit::Normal.restarts(Restart::Transient));
        assert!(Exit::Abnormal("x".into()).restarts(Restart::Transient));
        assert!(!Exit::Abnormal("x".into()).restarts(Restart::Temporary));
    }

    #[test]
    fn window_counts_restarts_inside_period() {
        let i = Intensity {
            max_restarts: 2,
            period: Duration::from_secs(60),
        };
        let mut w = RestartWindow::default();
        assert!(w.allow(&i));
        assert!(w.allow(&i));
        assert!(!w.allow(&i));
    }

    #[test]
    fn zero_intensity_never_restarts() {
        let i = Intensity {
            max_restarts: 0,
            period: Duration::from_secs(1),
        };
        assert!(!RestartWindow::default().allow(&i));
    }
}
