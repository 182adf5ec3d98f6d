//! The stop flag of a long-running command (`run`, `restore`), set by
//! SIGTERM and SIGINT. Installs handlers only; nothing runs in signal
//! context but the flag's store.

use anyhow::Context as _;

use crate::cancel::Cancel;

/// The stop flag of a long-running command: the first SIGTERM or SIGINT
/// drains it, a second one ends the process at once.
pub fn stop_on_signals() -> anyhow::Result<Cancel> {
    let cancel = Cancel::default();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, cancel.drain_flag())
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, cancel.drain_flag())
            .context("cannot install signal handlers")?;
    }
    Ok(cancel)
}
