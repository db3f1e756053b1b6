//! Progress for systemd: while a unit of ours runs, `systemctl status` shows where it stands
//! ("waiting for master_ready (try 3/50) at https://...", "done: 2 file(s) filled as worker")
//! without anyone reading the journal.
//!
//! The agent does not call this module: it is a tracing layer that turns two kinds of log
//! event into `STATUS=` messages on systemd's notify socket. An event with a `try` field (one
//! line per try, from the retry loop) becomes its message plus the `url` field; an event with
//! a `status` field becomes that field's text (the final "done" or "failed" lines). Without
//! `NOTIFY_SOCKET` (not under systemd, or a unit without `NotifyAccess=`) the layer is not
//! installed and nothing changes.

use std::fmt::Write as _;

use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_subscriber::{layer::Context, Layer};

/// The layer, or `None` when there is no notify socket to talk to.
pub fn layer() -> Option<StatusLayer> {
    std::env::var_os("NOTIFY_SOCKET").map(|_| StatusLayer)
}

/// Sends `STATUS=text` now; for the last word of a run that ends in an error (main.rs).
pub fn status(text: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        send(text);
    }
}

fn send(text: &str) {
    // A lost status line only makes `systemctl status` less informative: never an error.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
}

pub struct StatusLayer;

impl<S: Subscriber> Layer<S> for StatusLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Our own lines only: a dependency's `status` field (an HTTP status, say) is not ours.
        if !event.metadata().target().starts_with("clusterctx") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(text) = fields.line() {
            send(&text);
        }
    }
}

/// The fields of one event that a status line is made of.
#[derive(Default)]
struct Fields {
    message: String,
    url: Option<String>,
    has_try: bool,
    status: Option<String>,
}

impl Fields {
    fn line(self) -> Option<String> {
        if let Some(status) = self.status {
            return Some(status);
        }
        if !self.has_try {
            return None;
        }
        Some(match self.url {
            Some(url) => format!("{} at {url}", self.message),
            None => self.message,
        })
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "url" => self.url = Some(value.to_string()),
            "status" => self.status = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, _value: u64) {
        if field.name() == "try" {
            self.has_try = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        match field.name() {
            "message" => self.message = text,
            "try" => self.has_try = true,
            // `%value` fields arrive here as their Display text.
            "status" => self.status = Some(text),
            "url" => self.url = Some(text),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_try_line_names_the_url_and_a_status_field_wins() {
        let tried = Fields {
            message: "waiting for master_ready (try 3/50)".into(),
            url: Some("https://pins.example.org".into()),
            has_try: true,
            status: None,
        };
        assert_eq!(
            tried.line().as_deref(),
            Some("waiting for master_ready (try 3/50) at https://pins.example.org")
        );
        let done = Fields {
            message: "contextualized as worker: 2 file(s) rewritten".into(),
            status: Some("done: 2 file(s) filled as worker".into()),
            ..Fields::default()
        };
        assert_eq!(
            done.line().as_deref(),
            Some("done: 2 file(s) filled as worker")
        );
        let plain = Fields {
            message: "this node's address: 10.0.0.5".into(),
            ..Fields::default()
        };
        assert_eq!(plain.line(), None, "ordinary lines are not statuses");
    }
}
