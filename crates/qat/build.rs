include!("../../build_support/link_torch.rs");
