//! beamline-supervision: OTP supervision on ractor.
//!
//! ractor delivers supervision *events* (a linked child started, stopped or
//! failed) but has no restart strategies. This crate adds them:
//!
//! - [`Supervisor`]: an ordered list of children with a [`Strategy`]
//!   (`one_for_one`, `one_for_all`, `rest_for_one`), restart
//!   [`Intensity`] with escalation to the parent, optional [`Backoff`].
//! - [`DynamicSupervisor`]: many children of one kind, started and stopped at
//!   runtime (one per client session), with a maximum count.
//! - [`ChildSpec`]: how to start a child, its [`Restart`] type
//!   (permanent, transient, temporary) and its [`Shutdown`].
//! - [`ChildHandle`]: reaches a child's *current* actor across restarts.
//! - [`module`]: the gen_mod contract ([`module::Module`]) and the
//!   [`module::ModuleManager`] that starts, reloads and stops modules per
//!   virtual host as supervised child trees.
//!
//! Guarantees, event by event, are in `docs/runtime-semantics.md`: children
//! start in list order and stop in reverse order; a start that fails is an
//! error returned to the caller, never a panic; a supervisor that exceeds
//! its intensity stops its children and fails, so its parent sees it.

mod dynamic;
mod exit;
mod handle;
pub mod module;
mod spec;
mod supervisor;

pub use dynamic::{DynamicMsg, DynamicSpec, DynamicSupervisor, DynamicSupervisorRef};
pub use exit::{Exit, SHUTDOWN_REASON, shutdown_child};
pub use handle::{ChildHandle, ChildSlot, HandleError};
pub use spec::{
    Backoff, ChildKind, ChildSpec, DEFAULT_WORKER_SHUTDOWN, Intensity, Restart, Shutdown,
    StartError, StartFn,
};
pub use supervisor::{
    CALL_TIMEOUT, ChildCounts, ChildInfo, Strategy, Supervisor, SupervisorError, SupervisorMsg,
    SupervisorRef, SupervisorSpec, SupervisorState,
};
