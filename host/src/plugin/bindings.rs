//! Host bindings generated from the WIT package in `wit/`.
//!
//! Kept in a module of its own because the macro expansion is slow to
//! compile and rarely changes.

wasmtime::component::bindgen!({
    world: "format-plugin",
    path: "../wit",
});
