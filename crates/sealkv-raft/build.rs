//! Generates the tonic client and server for the one gRPC service every node serves. Messages are
//! opaque byte strings (see `src/codec.rs`), so no .proto file and no protoc are involved.

fn main() {
    let blob = |name: &str, route: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::codec::Blob")
            .output_type("crate::codec::Blob")
            .codec_path("crate::codec::BlobCodec")
    };
    let service = tonic_build::manual::Service::builder()
        .name("Node")
        .package("sealkv")
        .method(blob("append_entries", "AppendEntries").build())
        .method(blob("append_stream", "AppendStream").client_streaming().server_streaming().build())
        .method(blob("vote", "Vote").build())
        .method(blob("snapshot", "Snapshot").client_streaming().build())
        .method(blob("call", "Call").build())
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
