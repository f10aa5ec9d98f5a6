//! `uniffi-bindgen` at exactly the uniffi version the bindings are built with (the
//! generator and the scaffolding must match). Usage: see scripts/generate-bindings.sh.

fn main() {
    uniffi::uniffi_bindgen_main()
}
