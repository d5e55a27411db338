//! One stop signal for every loop of the host: consumers, relays, maintenance, the fleet's
//! sync and the broker links. A loop waits with [`Shutdown::pause`] rather than a bare
//! sleep, so a stop never waits out a delay.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Asked once, seen by every clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Ask every loop holding a clone to stop.
    pub fn stop(&self) {
        self.0.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once a stop is asked.
    pub async fn stopping(&self) {
        self.0.cancelled().await;
    }

    /// Wait `wait`, or less if a stop comes first: true when the wait ran its course.
    pub async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            () = self.0.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_ends_a_pause_at_once() {
        let shutdown = Shutdown::new();
        let waiting = shutdown.clone();
        let paused = tokio::spawn(async move { waiting.pause(Duration::from_secs(3600)).await });
        shutdown.stop();
        let ran_its_course =
            tokio::time::timeout(Duration::from_secs(10), paused).await.expect("ended").expect("joined");
        assert!(!ran_its_course);
        assert!(shutdown.is_stopping());
        assert!(!shutdown.pause(Duration::from_secs(3600)).await, "a pause after the stop ends at once");
    }
}
