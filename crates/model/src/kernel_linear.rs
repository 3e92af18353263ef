//! Linear layers that run on the packed low-bit CPU kernels (`autoqat-kernels`) instead of a
//! dequantized f32 weight: what makes a ternary model decode fast on a CPU.
//!
//! A loader repacks each quantized matrix once into a [`PackedWeight`] (one kind:
//! [`PackedMatrix`], or a compression artifact's rows of mixed kinds: [`MixedRows`]), keyed by
//! its module path (`model.layers.3.mlp.down_proj`), and hands them to a [`KernelBuilder`]. The
//! builder makes a [`KernelLinear`] for each of those modules (creating no weight variable, so
//! the model never holds the dense matrix) and plain layers for every other one; all kernel
//! layers share one [`Kernels`] (path + thread pool).
//!
//! The kernels are CPU code: a builder for any other device is refused with one error line.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

pub use autoqat_kernels::{ActMode, Acts, Kernels, MixedRows, PackedMatrix};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::linear::{Linear, LinearBuilder, LinearSpec, PlainLinear};

/// A quantized matrix in the kernel layout.
#[derive(Clone)]
pub enum PackedWeight {
    /// Every row of one kind (a QAT/KD student's ternary matrix).
    Packed(PackedMatrix),
    /// Rows of different kinds (a compression artifact's matrix).
    Mixed(MixedRows),
}

impl PackedWeight {
    /// Output rows.
    pub fn rows(&self) -> usize {
        match self {
            Self::Packed(m) => m.rows(),
            Self::Mixed(m) => m.rows(),
        }
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        match self {
            Self::Packed(m) => m.cols(),
            Self::Mixed(m) => m.cols(),
        }
    }

    /// Bytes the matrix holds (packed codes plus f32 scales): what one product reads.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Packed(m) => m.bytes(),
            Self::Mixed(m) => m.bytes(),
        }
    }

    /// The dense f32 matrix `[rows, cols]`, row-major (`code * scale`).
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Self::Packed(m) => m.dequantize(),
            Self::Mixed(m) => m.dequantize(),
        }
    }

    /// A short description: `ternary 576x1536` or `mixed[binary:10,ternary:566] 576x1536`.
    pub fn describe(&self) -> String {
        match self {
            Self::Packed(m) => format!("{:?} {}x{}", m.kind(), m.rows(), m.cols()).to_lowercase(),
            Self::Mixed(m) => {
                let parts: Vec<String> =
                    m.parts().iter().map(|(p, idx)| format!("{:?}:{}", p.kind(), idx.len())).collect();
                format!("mixed[{}] {}x{}", parts.join(","), m.rows(), m.cols()).to_lowercase()
            }
        }
    }
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The packed bytes would flood any debug print; the shape and kinds say what it is.
        write!(f, "PackedWeight({}, {} bytes)", self.describe(), self.bytes())
    }
}

/// One token's input to the layers that read it, prepared for the kernels at most once per
/// activation mode: q, k and v (or gate and up) then quantize their shared input once.
#[derive(Debug)]
pub struct HostInput<'a> {
    x: &'a [f32],
    prepared: Vec<Acts>,
}

impl<'a> HostInput<'a> {
    /// The input `x` (one token's features).
    pub fn new(x: &'a [f32]) -> Self {
        Self { x, prepared: Vec::new() }
    }

    /// The exact values.
    pub fn x(&self) -> &[f32] {
        self.x
    }

    /// The input prepared for `mode` (computed on the first request).
    pub fn acts(&mut self, mode: ActMode) -> autoqat_kernels::Result<&Acts> {
        let i = match self.prepared.iter().position(|a| a.mode() == mode) {
            Some(i) => i,
            None => {
                self.prepared.push(Acts::new(self.x, 1, self.x.len(), mode)?);
                self.prepared.len() - 1
            }
        };
        Ok(&self.prepared[i])
    }
}

/// A layer that runs one token on host slices, without a libtorch tensor: what the host decode
/// step ([`crate::host`]) calls for every product of a kernel model.
pub trait HostLinear {
    /// Output features.
    fn rows(&self) -> usize;
    /// `y = W x (+ b)` for one token (`y` holds `rows()` values).
    fn forward_host(&self, input: &mut HostInput<'_>, y: &mut [f32]) -> autoqat_kernels::Result<()>;
}

/// The elements of a contiguous f32 CPU tensor, borrowed without a copy; None for any other.
pub fn host_f32(t: &Tensor) -> Option<&[f32]> {
    if t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let n = t.numel();
    if n == 0 {
        return Some(&[]);
    }
    // SAFETY: `t` is a contiguous f32 CPU tensor of `n` elements; the slice borrows `t`, which
    // keeps the storage alive, and the model's weights are not written while it is read.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) })
}

/// Whether `bias` (if any) can be read on the host: a layer whose bias cannot offers no host view.
fn host_bias(bias: Option<&Tensor>) -> Option<Option<&[f32]>> {
    match bias {
        None => Some(None),
        Some(b) => host_f32(b).map(Some),
    }
}

fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (v, b) in y.iter_mut().zip(b) {
            *v += b;
        }
    }
}

/// `xs @ Wᵀ (+ b)` on the packed kernels: a matrix-vector product per token when one token
/// comes in (decode), a matrix-matrix product otherwise (prefill).
pub struct KernelLinear {
    weight: PackedWeight,
    bias: Option<Tensor>,
    mode: ActMode,
    pre: Option<ActFakeQuant>,
    kernels: Arc<Kernels>,
    name: String,
}

impl fmt::Debug for KernelLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelLinear")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("bias", &self.bias.is_some())
            .field("mode", &self.mode)
            .field("pre", &self.pre)
            .field("path", &self.kernels.path())
            .finish()
    }
}

/// Symmetric absmax fake quantization of a layer's input to `bits` (autoqat's activation
/// quantizer: `round(x * qmax / amax) * amax / qmax`, `amax >= 1e-5`), applied in f32 before an
/// [`ActMode::F32`] product, so a student whose layers quantize their inputs in a way the int8
/// kernels do not (4 bits, or one scale per channel) keeps its numerics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActFakeQuant {
    /// Bit width (2..=8).
    pub bits: u32,
    /// One scale per channel over all tokens of the call, instead of one per token.
    pub per_channel: bool,
}

impl ActFakeQuant {
    /// Quantizes `x` (`[n, cols]`) in place.
    pub fn apply(&self, x: &mut [f32], n: usize, cols: usize) {
        let qmax = ((1i64 << (self.bits - 1)) - 1) as f32;
        let round = |v: f32, scale: f32| (v * scale).round_ties_even().clamp(-qmax - 1.0, qmax) / scale;
        if self.per_channel {
            let mut amax = vec![0.0f32; cols];
            for row in x.chunks_exact(cols).take(n) {
                for (a, v) in amax.iter_mut().zip(row) {
                    *a = a.max(v.abs());
                }
            }
            let scales: Vec<f32> = amax.iter().map(|a| (1.0 / a.max(1e-5)) * qmax).collect();
            for row in x.chunks_exact_mut(cols).take(n) {
                for (v, s) in row.iter_mut().zip(&scales) {
                    *v = round(*v, *s);
                }
            }
        } else {
            for row in x.chunks_exact_mut(cols).take(n) {
                let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let s = (1.0 / amax.max(1e-5)) * qmax;
                for v in row.iter_mut() {
                    *v = round(*v, s);
                }
            }
        }
    }
}

impl KernelLinear {
    /// A layer over `weight` (`[out, in]`), inputs consumed as `mode`.
    pub fn new(name: &str, weight: PackedWeight, bias: Option<Tensor>, mode: ActMode, kernels: Arc<Kernels>) -> Self {
        Self { weight, bias, mode, pre: None, kernels, name: name.to_string() }
    }

    /// The same layer quantizing its input with `pre` before the product.
    pub fn with_pre(mut self, pre: Option<ActFakeQuant>) -> Self {
        self.pre = pre;
        self
    }

    /// The packed matrix.
    pub fn weight(&self) -> &PackedWeight {
        &self.weight
    }

    /// The activation mode.
    pub fn mode(&self) -> ActMode {
        self.mode
    }

    /// `[n, cols]` f32 (contiguous) -> `[n, rows]` f32.
    fn product(&self, x: &[f32], n: usize, y: &mut [f32]) -> autoqat_kernels::Result<()> {
        self.product_acts(&Acts::new(x, n, self.weight.cols(), self.mode)?, y)
    }

    /// `y = a Wᵀ` for activations already prepared in this layer's mode.
    fn product_acts(&self, a: &Acts, y: &mut [f32]) -> autoqat_kernels::Result<()> {
        match &self.weight {
            PackedWeight::Packed(m) => self.kernels.matmul_acts(m, a, y),
            PackedWeight::Mixed(m) => self.kernels.mixed_matmul_acts(m, a, y),
        }
    }
}

impl Linear for KernelLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (rows, cols) = (self.weight.rows(), self.weight.cols());
        let mut shape = xs.size();
        assert!(
            xs.device() == Device::Cpu,
            "{}: the packed kernels run on the CPU, but the input is on {:?}",
            self.name,
            xs.device()
        );
        assert!(
            shape.last() == Some(&(cols as i64)),
            "{}: input shape {shape:?} does not end in the layer's {cols} input features",
            self.name
        );
        let in_kind = xs.kind();
        if xs.numel() == 0 {
            if let Some(last) = shape.last_mut() {
                *last = rows as i64;
            }
            return Tensor::zeros(shape.as_slice(), (in_kind, Device::Cpu));
        }
        let out = on_host(xs, rows, cols, self.bias.as_ref(), |x, n, y| {
            if let Some(pre) = &self.pre {
                pre.apply(x, n, cols);
            }
            self.product(x, n, y)
        })
        .unwrap_or_else(|e| {
            // Shapes were checked when the layer was built, so this is a bug, not bad input.
            panic!("{}: packed kernel product failed: {e}", self.name)
        });
        if in_kind == Kind::Float {
            out
        } else {
            out.to_kind(in_kind)
        }
    }

    fn host(&self) -> Option<&dyn HostLinear> {
        host_bias(self.bias.as_ref())?;
        Some(self)
    }
}

impl HostLinear for KernelLinear {
    fn rows(&self) -> usize {
        self.weight.rows()
    }

    fn forward_host(&self, input: &mut HostInput<'_>, y: &mut [f32]) -> autoqat_kernels::Result<()> {
        match &self.pre {
            None => self.product_acts(input.acts(self.mode)?, y)?,
            Some(pre) => {
                // Fake-quantized input: this layer's own copy, not shared.
                let mut x = input.x().to_vec();
                let cols = x.len();
                pre.apply(&mut x, 1, cols);
                self.product(&x, 1, y)?;
            }
        }
        add_bias(y, self.bias.as_ref().and_then(host_f32));
        Ok(())
    }
}

/// Runs `product` (`x` `[n, cols]` -> `y` `[n, rows]`, f32, row-major) on a host copy of the
/// CPU tensor `xs` `[.., cols]`, and returns `[.., rows]` f32 with `bias` added: the round trip
/// every kernel-backed layer makes between libtorch and the kernels' slices.
fn on_host(
    xs: &Tensor,
    rows: usize,
    cols: usize,
    bias: Option<&Tensor>,
    product: impl FnOnce(&mut [f32], usize, &mut [f32]) -> autoqat_kernels::Result<()>,
) -> autoqat_kernels::Result<Tensor> {
    let n = xs.numel() / cols;
    let mut x = vec![0.0f32; n * cols];
    xs.detach().to_kind(Kind::Float).contiguous().view([-1]).copy_data(&mut x, n * cols);
    let mut y = vec![0.0f32; n * rows];
    product(&mut x, n, &mut y)?;
    let mut shape = xs.size();
    if let Some(last) = shape.last_mut() {
        *last = rows as i64;
    }
    let mut out = Tensor::from_slice(&y).view(shape.as_slice());
    if let Some(b) = bias {
        out += b;
    }
    Ok(out)
}

/// A full-precision layer of a kernel model (the tied lm_head, above all): one token goes
/// through the kernels' f32 matrix-vector product, which streams the weights at the memory's
/// speed, where libtorch's single-row GEMV reaches about a third of it on the CPUs measured
/// (docs/benchmarks.md); several tokens (prefill) stay with libtorch's GEMM. The same f32
/// products, summed in another order.
#[derive(Debug)]
pub struct DenseKernelLinear {
    inner: PlainLinear,
    kernels: Arc<Kernels>,
}

impl DenseKernelLinear {
    /// Wraps a plain layer.
    pub fn new(inner: PlainLinear, kernels: Arc<Kernels>) -> Self {
        Self { inner, kernels }
    }

    /// The weight as `(rows, cols, values)` when the kernels' f32 product can read it in place.
    fn host_weight(&self) -> Option<(usize, usize, &[f32])> {
        let w = &self.inner.weight;
        let [rows, cols] = w.size()[..] else { return None };
        Some((rows as usize, cols as usize, host_f32(w)?))
    }
}

impl Linear for DenseKernelLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let Some((rows, cols, weights)) = self.host_weight() else { return self.inner.forward(xs) };
        if xs.device() != Device::Cpu || xs.kind() != Kind::Float || xs.numel() != cols {
            return self.inner.forward(xs);
        }
        let product = |x: &mut [f32], _n: usize, y: &mut [f32]| self.kernels.dense_matvec(weights, rows, cols, x, y);
        on_host(xs, rows, cols, self.inner.bias.as_ref(), product)
            .unwrap_or_else(|e| panic!("dense kernel product failed: {e}"))
    }

    fn host(&self) -> Option<&dyn HostLinear> {
        self.host_weight()?;
        host_bias(self.inner.bias.as_ref())?;
        Some(self)
    }
}

impl HostLinear for DenseKernelLinear {
    fn rows(&self) -> usize {
        self.inner.weight.size().first().map_or(0, |&r| r as usize)
    }

    fn forward_host(&self, input: &mut HostInput<'_>, y: &mut [f32]) -> autoqat_kernels::Result<()> {
        let Some((rows, cols, w)) = self.host_weight() else {
            // `host()` offers this layer only with a weight the kernels can read in place; any
            // other still gets the right answer, from libtorch.
            let out = self.inner.forward(&Tensor::from_slice(input.x())).to_kind(Kind::Float);
            out.copy_data(y, y.len());
            return Ok(());
        };
        self.kernels.dense_matvec(w, rows, cols, input.x(), y)?;
        add_bias(y, self.inner.bias.as_ref().and_then(host_f32));
        Ok(())
    }
}

/// Packs the weight of module `name` (`[rows, cols]`) on demand, or None to leave it plain:
/// for formats whose matrix shapes are known only from the model (a compression artifact).
pub type WeightSource<'a> = dyn Fn(&str, usize, usize) -> Result<Option<PackedWeight>> + 'a;

/// Builds [`KernelLinear`] layers for the modules given packed weights and plain layers for
/// every other module. Use it once, for one model: the weights are moved into the layers.
pub struct KernelBuilder<'a> {
    kernels: Arc<Kernels>,
    source: Option<&'a WeightSource<'a>>,
    mode: ActMode,
    pre: Option<ActFakeQuant>,
    weights: Mutex<HashMap<String, PackedWeight>>,
    biases: HashSet<String>,
    built: Mutex<Vec<(String, usize)>>,
}

impl fmt::Debug for KernelBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelBuilder").field("mode", &self.mode).field("path", &self.kernels.path()).finish()
    }
}

/// The error of a packed-kernel model on a device other than the CPU.
pub fn cpu_only(device: Device) -> ModelError {
    cpu_only_named(&crate::device::device_name(device))
}

/// [`cpu_only`] for a device given by name (one that may not even exist on this machine).
pub fn cpu_only_named(device: &str) -> ModelError {
    ModelError::Device(format!(
        "the packed low-bit kernels run on the CPU only, not on {device} (hint: use the CPU, or the dense path: --kernel dense)"
    ))
}

impl<'a> KernelBuilder<'a> {
    /// A builder for a model on `device` (must be the CPU) whose modules named in `weights` (HF
    /// module paths, `model.layers.0.self_attn.q_proj`) run on `kernels` with inputs as `mode`.
    pub fn new(
        device: Device,
        kernels: Arc<Kernels>,
        mode: ActMode,
        weights: HashMap<String, PackedWeight>,
    ) -> Result<Self> {
        if device != Device::Cpu {
            return Err(cpu_only(device));
        }
        Ok(Self {
            kernels,
            source: None,
            mode,
            pre: None,
            weights: Mutex::new(weights),
            biases: HashSet::new(),
            built: Mutex::new(Vec::new()),
        })
    }

    /// Gives these modules (module paths) a bias even where the config has none (a QAT
    /// export's folded deadzone biases); the loader fills `<module>.bias`.
    pub fn with_biases(mut self, modules: impl IntoIterator<Item = String>) -> Self {
        self.biases.extend(modules);
        self
    }

    /// Asks `source` for the packed weight of every module not given one up front.
    pub fn with_source(mut self, source: &'a WeightSource<'a>) -> Self {
        self.source = Some(source);
        self
    }

    /// Quantizes the inputs of the kernel layers with `pre` before each product.
    pub fn with_pre(mut self, pre: Option<ActFakeQuant>) -> Self {
        self.pre = pre;
        self
    }

    /// The shared kernels.
    pub fn kernels(&self) -> &Arc<Kernels> {
        &self.kernels
    }

    /// The modules built on the kernels so far, with the bytes of their packed weights.
    pub fn built(&self) -> Vec<(String, usize)> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Bytes of every packed weight built so far.
    pub fn packed_bytes(&self) -> usize {
        self.built().iter().map(|(_, b)| b).sum()
    }

    /// After the model is built: an error naming any packed weight no module of the model used
    /// (a module path the config does not have).
    pub fn check_all_used(&self) -> Result<()> {
        let left = self.weights.lock().unwrap_or_else(PoisonError::into_inner);
        if left.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&String> = left.keys().collect();
        names.sort();
        Err(ModelError::Unsupported(format!(
            "packed weights for modules the model does not have: {}",
            names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// The module path of the layer whose variables live under `p`.
fn module_path(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

impl LinearBuilder for KernelBuilder<'_> {
    fn linear(&self, p: &nn::Path, mut spec: LinearSpec) -> Result<Box<dyn Linear>> {
        if p.device() != Device::Cpu {
            return Err(cpu_only(p.device()));
        }
        let name = module_path(p);
        if self.biases.contains(&name) {
            spec.bias = true;
        }
        let mut packed = self.weights.lock().unwrap_or_else(PoisonError::into_inner).remove(&name);
        if let (None, Some(source)) = (&packed, self.source) {
            packed = source(&name, spec.out_dim as usize, spec.in_dim as usize)?;
        }
        let Some(weight) = packed else {
            return Ok(Box::new(DenseKernelLinear::new(PlainLinear::new(p, spec)?, self.kernels.clone())));
        };
        if weight.rows() as i64 != spec.out_dim || weight.cols() as i64 != spec.in_dim {
            return Err(ModelError::Unsupported(format!(
                "packed weight {name} is {}x{}, the model expects {}x{}",
                weight.rows(),
                weight.cols(),
                spec.out_dim,
                spec.in_dim
            )));
        }
        let bias = if spec.bias { Some(p.f_zeros("bias", &[spec.out_dim])?) } else { None };
        self.built.lock().unwrap_or_else(PoisonError::into_inner).push((name.clone(), weight.bytes()));
        let layer = KernelLinear::new(&name, weight, bias, self.mode, self.kernels.clone()).with_pre(self.pre);
        Ok(Box::new(layer))
    }
}

/// Bytes of every variable of `vs` (elements times element size; a tied weight counts once).
pub fn var_bytes(vs: &VarStore) -> usize {
    vs.variables().values().map(|t| t.numel() * t.kind().elt_size_in_bytes()).sum()
}
