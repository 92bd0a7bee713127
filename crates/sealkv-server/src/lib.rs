//! The client side of a sealkv node's gRPC API, shared by the `sealkv` binary and by tools that
//! drive a cluster from outside (the `sealkv-bench` load generator).

// tonic's `Status` is large and fixed by its API.
#![allow(clippy::result_large_err)]

pub mod api;
