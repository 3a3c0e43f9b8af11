//! Cluster knowledge written once, for the proxy, `redisforge-ops` and the end-to-end tests:
//! [`slot`] (key → hash slot), [`nodes`] (`CLUSTER NODES` parsed into typed lines, slot ranges),
//! [`info`] (`INFO` fields) and [`addr`] (node addresses). Pure: text in, values out, no I/O.
#![forbid(unsafe_code)]

pub mod addr;
pub mod info;
pub mod nodes;
pub mod slot;
