//! Device health: which offered or prepared devices cannot carry traffic,
//! and since when.
//!
//! [`judge`] is a pure function of the inventory; [`book::HealthBook`]
//! remembers since when each status holds (a taint's `timeAdded` and the
//! kubelet's `last_updated_time` must not move while nothing changes) and
//! hands every change to the slice publisher and the kubelet's health
//! stream.

pub mod book;
pub mod judge;

pub use book::{DeviceHealth, HealthBook, HealthReport};
pub use judge::{Problem, judge};
