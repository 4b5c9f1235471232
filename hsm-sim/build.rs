//! Link arguments.
//!
//! - The cdylib is marked `-z nodelete`: Rust code in it (and aws-lc) registers thread-local
//!   destructors, which would jump into unmapped memory if a consumer `dlclose`d the module while
//!   threads that used it are still alive.
//! - Examples export the PKCS#11 entry points from the executable, as a program embedding the
//!   token must for cryptoki's `Pkcs11::new_from_self()` to find them (see `examples/embedded.rs`).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    for sym in ["C_GetFunctionList", "C_GetInterface"] {
        println!("cargo:rustc-link-arg-examples=-Wl,--export-dynamic-symbol={sym}");
    }
}
