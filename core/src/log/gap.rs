//! Why continuity could not be proven.

use core::fmt;

/// Why a stream is told `tidings.gap`: some messages it was entitled to may
/// not reach it, so the app should reload its state. Sent as `reason` in
/// the event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GapReason {
    /// The resume id is older than the retained history.
    HistoryTrimmed,
    /// The resume id is not a Tidings id (garbage, another product).
    UnknownId,
    /// The resume id belongs to another incarnation of the log (the engine
    /// or the process restarted and lost what it had, or another
    /// deployment).
    UnknownEpoch,
    /// The resume id is ahead of everything the log has produced.
    FutureId,
    /// The engine lost entries and started a new epoch while this stream
    /// was open.
    EngineRestarted,
    /// Entries were trimmed or lost before this instance could read them.
    EntriesLost,
}

impl GapReason {
    /// The machine-readable code sent to clients.
    pub const fn code(self) -> &'static str {
        match self {
            Self::HistoryTrimmed => "history_trimmed",
            Self::UnknownId => "unknown_id",
            Self::UnknownEpoch => "unknown_epoch",
            Self::FutureId => "future_id",
            Self::EngineRestarted => "engine_restarted",
            Self::EntriesLost => "entries_lost",
        }
    }
}

impl fmt::Display for GapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
