//! Marks the cdylib `-z nodelete`: Rust code in it (and aws-lc) registers thread-local
//! destructors, which would jump into unmapped memory if a consumer `dlclose`d the module
//! while threads that used it are still alive. SoftHSM2 users see the same class of bug; here
//! the module simply stays mapped once loaded.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
