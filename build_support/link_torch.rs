// Shared build script for every package that links libtorch.
//
// Why: with the linker's default `--as-needed`, `libtorch_cuda.so` is dropped because no
// symbol of it is referenced directly, and CUDA then reads as unavailable (tch issues #907,
// #980). We force it in, and bake an rpath to the libtorch directory so the binary runs
// without LD_LIBRARY_PATH (which still takes precedence when set).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=../../build_support/link_torch.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set; CUDA may not be linked");
        return;
    };
    let dir = std::path::Path::new(&lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath={lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-L{lib_dir}");
    println!("cargo:rustc-link-arg=-ltorch");
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    println!("cargo:rustc-env=AUTOQAT_LIBTORCH_LIB={lib_dir}");
}
