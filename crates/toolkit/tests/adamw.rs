//! autoqat's AdamW against `torch.optim.AdamW` (tests/reference/adamw_ref.py): same updates
//! over several steps with a changing lr, weight decay on matrices only.

mod common;

use autoqat_toolkit::optim::AdamW;
use tch::{Device, Kind, Tensor};

#[test]
fn adamw_matches_torch() {
    let Some(py) = common::python() else { return };
    tch::manual_seed(3);
    let opts = (Kind::Float, Device::Cpu);
    let p0 = Tensor::randn([6, 5], opts);
    let p1 = Tensor::randn([5], opts);
    let lrs = [1e-2, 5e-3, 2e-2, 1e-3];
    let mut inputs = vec![
        ("p0".to_string(), p0.copy()),
        ("p1".to_string(), p1.copy()),
        ("lrs".to_string(), Tensor::from_slice(&lrs).to_kind(Kind::Double)),
    ];
    let grads: Vec<[Tensor; 2]> =
        (0..lrs.len()).map(|_| [Tensor::randn([6, 5], opts), Tensor::randn([5], opts)]).collect();
    for (s, g) in grads.iter().enumerate() {
        inputs.push((format!("g{s}_0"), g[0].copy()));
        inputs.push((format!("g{s}_1"), g[1].copy()));
    }
    let dir = tempfile::tempdir().unwrap();
    Tensor::write_safetensors(&inputs, dir.path().join("in.safetensors")).unwrap();
    common::run_reference(
        &py,
        "adamw_ref.py",
        &[dir.path().join("in.safetensors").as_os_str(), dir.path().join("out.safetensors").as_os_str()],
    );
    let want: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("out.safetensors")).unwrap().into_iter().collect();

    let v0 = p0.copy().set_requires_grad(true);
    let v1 = p1.copy().set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![("w.weight".into(), v0.shallow_clone()), ("norm.weight".into(), v1.shallow_clone())],
        0.9,
        0.95,
        0.1,
    );
    assert!(opt.params.iter().any(|p| p.name == "w.weight" && p.decay));
    assert!(opt.params.iter().any(|p| p.name == "norm.weight" && !p.decay));
    for (s, lr) in lrs.iter().enumerate() {
        opt.zero_grad();
        // Set the gradient by backpropagating <p, g>.
        ((&v0 * &grads[s][0]).sum(Kind::Float) + (&v1 * &grads[s][1]).sum(Kind::Float)).backward();
        opt.step(*lr);
    }
    for (got, key) in [(&v0, "p0"), (&v1, "p1")] {
        let err = (got - &want[key]).abs().max().double_value(&[]);
        assert!(err < 1e-6, "{key} differs from torch.optim.AdamW by {err}");
    }
}
