//! Device and dtype names as users type them: `auto|cpu|cuda|cuda:N|mps`, `f32|bf16|f16`.

use tch::{Device, Kind};

use crate::error::{ModelError, Result};

/// Parses a device name; `auto` picks CUDA, then MPS, then CPU. A device that is named but
/// absent is an error, not a silent fallback.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "auto" => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else if tch::utils::has_mps() {
            Device::Mps
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "mps" => {
            if tch::utils::has_mps() {
                Ok(Device::Mps)
            } else {
                Err(ModelError::Device("device \"mps\" is not available on this machine (hint: --device cpu)".into()))
            }
        }
        _ => {
            let index = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => {
                    rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()).ok_or_else(|| unknown(&s))?
                }
                None => return Err(unknown(&s)),
            };
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(ModelError::Device(format!(
                    "device \"{s}\" is not available: {count} CUDA device(s) seen (hint: --device cpu, or run `autoqat doctor`)"
                )));
            }
            Ok(Device::Cuda(index))
        }
    }
}

fn unknown(s: &str) -> ModelError {
    ModelError::Device(format!("unknown device \"{s}\" (expected auto, cpu, cuda, cuda:N or mps)"))
}

/// Parses `f32|bf16|f16` (also `float32`, `bfloat16`, `float16`).
pub fn parse_kind(s: &str) -> Result<Kind> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "fp16" | "float16" => Ok(Kind::Half),
        _ => Err(ModelError::Dtype(s.to_string())),
    }
}

/// A short name for a device: cpu, cuda:N, mps.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Bytes in use on CUDA device `index` as the CUDA runtime reports them (`total - free`: the
/// caching allocator's reserve, the context, and any other process on the card); `None` where
/// no CUDA runtime is loaded or the device cannot be queried.
///
/// libtorch exposes no allocator statistics through its C API, so this asks the CUDA runtime
/// that libtorch_cuda already loaded; nothing is loaded that was not there.
pub fn cuda_used_bytes(index: usize) -> Option<u64> {
    type GetDevice = unsafe extern "C" fn(*mut i32) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    let lib = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"].iter().find_map(|name| {
        let c = std::ffi::CString::new(*name).ok()?;
        // SAFETY: RTLD_NOLOAD only returns a handle to a library already mapped into the process.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        (!h.is_null()).then_some(h)
    })?;
    let sym = |name: &str| {
        let c = std::ffi::CString::new(name).ok()?;
        // SAFETY: `lib` is a live handle; a missing symbol yields null, checked here.
        let p = unsafe { libc::dlsym(lib, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    let (get, set, info) = (sym("cudaGetDevice")?, sym("cudaSetDevice")?, sym("cudaMemGetInfo")?);
    // SAFETY: the three symbols have the CUDA runtime's documented C signatures.
    let (get, set, info) = unsafe {
        (
            std::mem::transmute::<*mut libc::c_void, GetDevice>(get),
            std::mem::transmute::<*mut libc::c_void, SetDevice>(set),
            std::mem::transmute::<*mut libc::c_void, MemGetInfo>(info),
        )
    };
    let (mut current, mut free, mut total) = (0i32, 0usize, 0usize);
    // SAFETY: plain out-pointers to locals; the thread's current device is restored so that
    // libtorch's own device guard sees what it set.
    unsafe {
        if get(&mut current) != 0 || set(index as i32) != 0 {
            return None;
        }
        let ok = info(&mut free, &mut total) == 0;
        set(current);
        ok.then(|| (total - free) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device \"tpu\"") && err.contains("cuda:N"), "{err}");
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_kind("bf16").unwrap(), Kind::BFloat16);
        assert!(parse_kind("int4").unwrap_err().to_string().contains("f32, bf16 or f16"));
    }
}
