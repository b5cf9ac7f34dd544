//! Waking a sleeping `cold_start` instance: however many first requests arrive
//! at once, one start runs and every one of them waits for it.

use crate::instances::ops::{self, Actor};
use crate::state::AppState;
use berth_core::lifecycle::Action;
use berth_core::{InstanceId, Status, WorkspaceId};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::Mutex;

type WakeFuture = Shared<BoxFuture<'static, Result<(), String>>>;

/// Wakes in flight, one per instance.
#[derive(Default)]
pub struct Wakes {
    inflight: Mutex<HashMap<InstanceId, WakeFuture>>,
}

impl Wakes {
    /// Starts the instance (or joins the start already under way) and waits for it.
    /// `true` in the second place when this call began the start.
    /// The start runs on `main` (the server's runtime), not on the caller's.
    pub async fn wake(
        &self,
        main: &tokio::runtime::Handle,
        state: &AppState,
        id: &InstanceId,
        workspace: &WorkspaceId,
    ) -> (Result<(), String>, bool) {
        let (fut, began) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let (state, id2, ws) = (state.clone(), id.clone(), workspace.clone());
                    // On its own task: a client that hangs up does not cancel the start.
                    let task = main.spawn(async move {
                        match ops::act(state, Actor::Edge(ws), id2.to_string(), Action::Start).await {
                            Ok(_) => Ok(()),
                            // Someone else started it meanwhile: just as good.
                            Err(crate::error::ApiError::InvalidState(t)) if t.current == Status::Running => Ok(()),
                            Err(e) => Err(e.to_string()),
                        }
                    });
                    let fut = async move { task.await.unwrap_or_else(|e| Err(format!("wake aborted: {e}"))) }
                        .boxed()
                        .shared();
                    map.insert(id.clone(), fut.clone());
                    (fut, true)
                }
            }
        };
        let result = fut.clone().await;
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(id).is_some_and(|f| f.ptr_eq(&fut)) {
            map.remove(id);
        }
        (result, began)
    }
}
