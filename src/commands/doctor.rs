//! `autoqat doctor`: what libtorch this binary runs on and which devices it sees.

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::DoctorArgs;

/// What `autoqat doctor` found.
#[derive(Debug, Serialize)]
struct Report {
    autoqat_version: &'static str,
    torch_version: Option<String>,
    libtorch_loaded_from: Option<PathBuf>,
    libtorch_built_against: &'static str,
    cuda_linked: bool,
    cuda_available: bool,
    cuda_device_count: i64,
    cuda_devices: Vec<String>,
    cudnn_version: Option<i64>,
    mps_available: bool,
    cpu_threads: i32,
    mkl: bool,
    openmp: bool,
    /// The interpreter `autoqat python` (python-qat trials) runs, and where it came from.
    python: PathBuf,
    python_from: &'static str,
    hints: Vec<String>,
}

/// Runs `autoqat doctor`.
pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let report = collect();
    if args.json.on {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("autoqat        {}", report.autoqat_version);
    println!(
        "libtorch       {} (loaded from {})",
        report.torch_version.as_deref().unwrap_or("unknown version"),
        report.libtorch_loaded_from.as_ref().map_or("?".to_string(), |p| p.display().to_string())
    );
    println!("built against  {}", report.libtorch_built_against);
    println!("cuda linked    {}", yes_no(report.cuda_linked));
    println!(
        "cuda           {} ({} device{})",
        yes_no(report.cuda_available),
        report.cuda_device_count,
        if report.cuda_device_count == 1 { "" } else { "s" }
    );
    for (i, name) in report.cuda_devices.iter().enumerate() {
        println!("  cuda:{i}       {name}");
    }
    if let Some(v) = report.cudnn_version {
        println!("cudnn          {v}");
    }
    println!("mps            {}", yes_no(report.mps_available));
    println!("cpu threads    {} (mkl {}, openmp {})", report.cpu_threads, yes_no(report.mkl), yes_no(report.openmp));
    println!("python         {} ({})", report.python.display(), report.python_from);
    for hint in &report.hints {
        println!("hint: {hint}");
    }
    Ok(())
}

fn collect() -> Report {
    let loaded = loaded_library("libtorch_cpu.so");
    let cuda_linked = loaded_library("libtorch_cuda.so").is_some();
    let torch_version = loaded.as_ref().and_then(|lib| torch_version_near(lib));
    let cuda_available = tch::Cuda::is_available();
    let cuda_device_count = if cuda_available { tch::Cuda::device_count() } else { 0 };
    let cuda_devices = if cuda_available { cuda_device_names(cuda_device_count) } else { Vec::new() };
    let cudnn_version = (cuda_available && tch::Cuda::cudnn_is_available()).then(tch::utils::version_cudnn);
    let mut hints = Vec::new();
    if !cuda_linked && torch_version.as_deref().is_some_and(|v| !v.contains("+cpu")) {
        hints.push(
            "libtorch_cuda.so is not linked: rebuild with ./scripts/test or ./scripts/demo so build.rs forces it in"
                .to_string(),
        );
    }
    if cuda_linked && !cuda_available {
        hints.push("CUDA support is linked but no GPU is visible (driver missing, or CUDA_VISIBLE_DEVICES empty): trials run on CPU".to_string());
    }
    if let Some(v) = &torch_version {
        if !v.starts_with("2.11.0") {
            hints.push(format!(
                "tch 0.24.0 expects PyTorch 2.11.0 but {v} is loaded: point LD_LIBRARY_PATH at a 2.11.0 torch/lib"
            ));
        }
    }
    let (python, python_from) = super::python::interpreter();
    Report {
        autoqat_version: env!("CARGO_PKG_VERSION"),
        torch_version,
        libtorch_loaded_from: loaded,
        libtorch_built_against: option_env!("AUTOQAT_LIBTORCH_LIB").unwrap_or("unknown"),
        cuda_linked,
        cuda_available,
        cuda_device_count,
        cuda_devices,
        cudnn_version,
        mps_available: tch::utils::has_mps(),
        cpu_threads: tch::get_num_threads(),
        mkl: tch::utils::has_mkl(),
        openmp: tch::utils::has_openmp(),
        python,
        python_from,
        hints,
    }
}

/// Path of a shared library mapped into this process, from /proc/self/maps (Linux only):
/// this shows which libtorch really got loaded, whatever LD_LIBRARY_PATH or the rpath said.
fn loaded_library(name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.rsplit('/').next() == Some(name))
        .map(PathBuf::from)
}

/// Reads `__version__` from the `version.py` of the torch package that holds `lib`.
fn torch_version_near(lib: &std::path::Path) -> Option<String> {
    let torch_dir = lib.parent()?.parent()?;
    let text = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("__version__")).map(|rest| {
        rest.trim_start_matches([' ', '=', ':', 's', 't', 'r']).trim().trim_matches(['\'', '"']).to_string()
    })
}

/// GPU names from nvidia-smi when present; libtorch's C API exposes no device name.
fn cuda_device_names(count: i64) -> Vec<String> {
    let from_smi = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).collect::<Vec<_>>());
    match from_smi {
        Some(names) if names.len() as i64 == count => names,
        _ => (0..count).map(|i| format!("CUDA device {i}")).collect(),
    }
}
