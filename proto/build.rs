//! Compiles proto/rung/v1/rung.proto with the protoc that `protoc-bin-vendored` ships, so a fresh
//! machine builds with cargo alone.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/rung/v1/rung.proto";
    println!("cargo:rerun-if-changed={proto}");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Clients are always built; servers only with the crate's `server` feature.
        .server_mod_attribute("rung.v1", "#[cfg(feature = \"server\")]")
        .compile_with_config(config, &[proto], &["proto"])?;
    Ok(())
}
