//! The backends behind the stores: one connected provider per store ([`connections`]),
//! rate limits on their reads ([`ratelimit`]), health per store ([`health`]) and the stores'
//! own Ready checks ([`checks`]).

pub(crate) mod checks;
pub(crate) mod connections;
pub(crate) mod health;
pub(crate) mod ratelimit;
