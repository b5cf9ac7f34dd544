//! The instance state machine. Both the API and the reconciler ask it which
//! transitions are legal, so `409 invalid_state` means the same thing everywhere.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Creating,
    Running,
    Stopping,
    Stopped,
    Paused,
    Error,
    Deleted,
}

impl Status {
    /// Every status, in display order.
    pub const ALL: [Status; 7] = [
        Status::Creating,
        Status::Running,
        Status::Stopping,
        Status::Stopped,
        Status::Paused,
        Status::Error,
        Status::Deleted,
    ];

    /// The wire name (`running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
            Status::Error => "error",
            Status::Deleted => "deleted",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// Something a client (or the reconciler) asks of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
    Restart,
    Pause,
    Resume,
    Update,
    Delete,
    Restore,
    /// PATCH of size or env: the container is changed or recreated.
    Reconfigure,
}

impl Action {
    /// The wire name used in paths and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Reconfigure => "reconfigure",
        }
    }
}

/// Refusal of an action from the instance's current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} an instance that is {current}")]
pub struct InvalidTransition {
    /// What was asked (`stop`, `pause`, ...).
    pub action: &'static str,
    /// The status the instance is in.
    pub current: Status,
}

/// Where `action` takes an instance that is `current`, or why it may not.
///
/// The returned status is the resting state once the action completes.
pub fn transition(current: Status, action: Action) -> Result<Status, InvalidTransition> {
    use Status::*;
    let target = match (action, current) {
        (Action::Stop, Running | Error | Paused) => Some(Stopped),
        (Action::Start, Stopped | Error) => Some(Running),
        (Action::Restart, Running | Error) => Some(Running),
        (Action::Pause, Running) => Some(Paused),
        (Action::Resume, Paused) => Some(Running),
        (Action::Update, Running | Stopped | Error) => Some(if current == Stopped { Stopped } else { Running }),
        (Action::Delete, Running | Stopped | Paused | Error | Stopping) => Some(Deleted),
        (Action::Restore, Deleted) => Some(Running),
        (Action::Reconfigure, Running | Stopped | Paused | Error) => Some(current),
        _ => None,
    };
    target.ok_or(InvalidTransition { action: action.as_str(), current })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_transitions_land_where_expected() {
        assert_eq!(transition(Status::Running, Action::Stop), Ok(Status::Stopped));
        assert_eq!(transition(Status::Stopped, Action::Start), Ok(Status::Running));
        assert_eq!(transition(Status::Running, Action::Pause), Ok(Status::Paused));
        assert_eq!(transition(Status::Paused, Action::Resume), Ok(Status::Running));
        assert_eq!(transition(Status::Deleted, Action::Restore), Ok(Status::Running));
    }

    #[test]
    fn wrong_state_is_refused_with_current_status() {
        let err = transition(Status::Stopped, Action::Pause).unwrap_err();
        assert_eq!(err.current, Status::Stopped);
        assert_eq!(err.to_string(), "cannot pause an instance that is stopped");
        assert!(transition(Status::Running, Action::Start).is_err());
        assert!(transition(Status::Running, Action::Resume).is_err());
        assert!(transition(Status::Running, Action::Restore).is_err());
        assert!(transition(Status::Deleted, Action::Delete).is_err());
        assert!(transition(Status::Creating, Action::Stop).is_err());
    }

    #[test]
    fn every_status_and_action_is_decided_as_documented() {
        use Action as A;
        use Status::*;
        let actions =
            [A::Stop, A::Start, A::Restart, A::Pause, A::Resume, A::Update, A::Delete, A::Restore, A::Reconfigure];
        // Rows: the current status. Columns, in `actions` order: where it ends, or None (409).
        let table: [(Status, [Option<Status>; 9]); 7] = [
            (Creating, [None, None, None, None, None, None, None, None, None]),
            (
                Running,
                [
                    Some(Stopped),
                    None,
                    Some(Running),
                    Some(Paused),
                    None,
                    Some(Running),
                    Some(Deleted),
                    None,
                    Some(Running),
                ],
            ),
            (Stopping, [None, None, None, None, None, None, Some(Deleted), None, None]),
            (Stopped, [None, Some(Running), None, None, None, Some(Stopped), Some(Deleted), None, Some(Stopped)]),
            (Paused, [Some(Stopped), None, None, None, Some(Running), None, Some(Deleted), None, Some(Paused)]),
            (
                Error,
                [
                    Some(Stopped),
                    Some(Running),
                    Some(Running),
                    None,
                    None,
                    Some(Running),
                    Some(Deleted),
                    None,
                    Some(Error),
                ],
            ),
            (Deleted, [None, None, None, None, None, None, None, Some(Running), None]),
        ];
        assert_eq!(table.len(), Status::ALL.len(), "every status has a row");
        for (current, row) in table {
            for (action, want) in actions.into_iter().zip(row) {
                let got = transition(current, action);
                match want {
                    Some(target) => assert_eq!(got, Ok(target), "{} from {current}", action.as_str()),
                    None => assert_eq!(
                        got,
                        Err(InvalidTransition { action: action.as_str(), current }),
                        "{} from {current}",
                        action.as_str()
                    ),
                }
            }
        }
    }

    #[test]
    fn status_round_trips_through_text() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
        }
    }
}
