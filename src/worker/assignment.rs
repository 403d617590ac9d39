//! Which of the catalog's enabled sources a worker of the pool serves.
use crate::settings;
use crate::source::{Source, SourceError};
use sqs_ingest_core::assignment;

/// The enabled sources worker `index` serves, as the catalog says now.
pub fn assigned(index: usize) -> Result<Vec<Source>, SourceError> {
    let sources = Source::enabled()?;
    let asked: Vec<(&str, usize)> = sources.iter().map(|s| (s.name.as_str(), workers_asked(s))).collect();
    let mine = assignment::assigned(index, settings::worker_count(), &asked);
    Ok(sources.iter().filter(|s| mine.contains(&s.name.as_str())).cloned().collect())
}

/// How many workers a source asks for: its own setting, else 1, and the whole pool for the
/// login source (as sqs_ingest.workers meant before sources).
fn workers_asked(source: &Source) -> usize {
    match source.workers {
        Some(n) => n.max(0) as usize,
        None if source.is_login() => settings::worker_count(),
        None => 1,
    }
}
