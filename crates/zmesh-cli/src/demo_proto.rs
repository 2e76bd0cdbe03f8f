//! Types generated from `proto/zmesh_demo.proto` by the build script.
#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/zmesh.demo.rs"));
