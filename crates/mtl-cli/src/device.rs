//! `--device`: choose among the backends compiled in.

use anyhow::{Result, bail};
use mtl::burn::tensor::Device;

/// Names accepted by `--device`.
pub const DEVICES: &str = "cpu, wgpu, libtorch, libtorch-cuda[:N]";

/// Parses a `--device` value into a Burn device, or explains which feature enables it.
pub fn parse(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "cpu" | "flex" => cpu(),
        "wgpu" | "gpu" => wgpu(),
        "libtorch" | "tch" | "libtorch-cpu" => libtorch(None),
        _ => {
            if let Some(rest) = name.strip_prefix("libtorch-cuda") {
                let index = rest.trim_start_matches(':');
                let index = if index.is_empty() {
                    0
                } else {
                    index.parse::<usize>()?
                };
                return libtorch(Some(index));
            }
            bail!("unknown device {name:?}: expected one of {DEVICES}")
        }
    }
}

#[cfg(feature = "flex")]
fn cpu() -> Result<Device> {
    Ok(Device::flex())
}

#[cfg(not(feature = "flex"))]
fn cpu() -> Result<Device> {
    bail!("device cpu is not compiled in: rebuild with `--features flex` (on by default)")
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    Ok(Device::wgpu(mtl::burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    bail!(
        "device wgpu is not compiled in: rebuild with `--features wgpu` (e.g. `cargo xtask train --features wgpu`)"
    )
}

/// The one place that constructs Burn's deprecated libtorch devices.
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn libtorch(cuda: Option<usize>) -> Result<Device> {
    Ok(match cuda {
        None => Device::libtorch(),
        Some(i) => Device::libtorch_cuda(i),
    })
}

#[cfg(not(feature = "tch"))]
fn libtorch(_cuda: Option<usize>) -> Result<Device> {
    bail!(
        "device libtorch is not compiled in: rebuild with `--features tch` (see the README's backend table)"
    )
}
