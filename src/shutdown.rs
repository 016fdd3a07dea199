//! One shutdown signal for every server: a watch channel that flips once.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.sender.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown is triggered (or the trigger is dropped).
    pub async fn wait(mut self) {
        let _ = self.receiver.wait_for(|&stop| stop).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn os_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
