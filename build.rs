//! Generates the gRPC code from `proto/` with protox (a protobuf compiler in Rust), so building
//! keywarden needs no system `protoc`; and exports the embedded hsm-sim token's PKCS#11 entry
//! points from the executables, so that cryptoki's `Pkcs11::new_from_self` finds them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/keywarden/v1/keywarden.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    for kind in ["bins", "tests", "benches"] {
        for symbol in ["C_GetFunctionList", "C_GetInterface"] {
            println!("cargo:rustc-link-arg-{kind}=-Wl,--export-dynamic-symbol={symbol}");
        }
    }
    Ok(())
}
