//! Generates the CRI client from proto/api.proto: protox (a protobuf
//! compiler in Rust) parses it, tonic-prost-build writes the Rust code, so
//! building needs no protoc on the machine.

fn main() {
    let proto = "proto/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"]).expect("parse proto/api.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)
        .expect("generate the CRI client from proto/api.proto");
}
