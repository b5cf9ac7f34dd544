//! Showing a freshly created secret: the only time the server ever returns it.

/// Print `secret` set apart from the rest, with the warning that it is shown once.
pub fn announce(what: &str, secret: Option<&str>) {
    match secret {
        Some(secret) => {
            println!("\n{what} (shown only this once; store it now):\n\n    {secret}\n");
        }
        None => eprintln!("warning: the server returned no secret for {what}"),
    }
}
