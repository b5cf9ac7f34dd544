//! Progress on anything slow: a spinner on stderr while a call waits, drawn only
//! when stderr is a terminal so scripts and pipes see nothing.

use indicatif::{ProgressBar, ProgressStyle};
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

/// Await `work` with a spinner saying `message` and the time spent so far.
pub async fn spin<F: Future>(message: String, work: F) -> F::Output {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner().with_message(message);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    } else {
        ProgressBar::hidden()
    };
    let out = work.await;
    bar.finish_and_clear();
    out
}
